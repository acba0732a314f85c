//! `kubectl podlife report POD`: a pod's PodLifecycle report as a terminal timeline, JSON, SVG
//! or an HTML page.

use std::io::Write;

use kube::api::ListParams;
use kube::{Api, Client};

use super::{Error, Result};
use crate::crd::PodLifecycle;
use crate::harness::render::report_html;
use crate::harness::timeline::Timeline;

/// Output formats of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A terminal timeline and the restart table.
    Human,
    /// The report's status as JSON.
    Json,
    /// An SVG Gantt chart.
    Svg,
    /// An HTML page with the SVG chart and the restart table.
    Html,
}

/// Finds the newest report of `pod` in `namespace` (a recreated pod has a new report).
///
/// # Errors
/// None exists, or the API call fails.
pub async fn find_report(client: &Client, namespace: &str, pod: &str) -> Result<PodLifecycle> {
    let api: Api<PodLifecycle> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default().labels(&format!("podlife.io/pod-name={pod}"))).await?;
    list.items
        .into_iter()
        .filter(|r| r.spec.pod_name == pod)
        .max_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0))
        .ok_or_else(|| Error::NoReport { pod: pod.to_string(), namespace: namespace.to_string() })
}

/// Prints a report in `format`.
///
/// # Errors
/// The report is missing, or output fails.
pub async fn report(client: &Client, namespace: &str, pod: &str, format: Format, width: usize, out: &mut impl Write) -> Result<()> {
    let report = find_report(client, namespace, pod).await?;
    let history = report.status.unwrap_or_else(|| crate::lifecycle::PodHistory::new(pod, &report.spec.pod_uid));
    let timeline = Timeline::from_history(&history, jiff::Timestamp::now());
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&history)?)?,
        Format::Svg => write!(out, "{}", timeline.render_svg())?,
        Format::Html => write!(out, "{}", report_html(&history, &timeline))?,
        Format::Human => {
            write!(out, "{}", timeline.render_text(width))?;
            let s = &history.summary;
            writeln!(
                out,
                "\nphase {} · ready {} · restarts {} · back-off {} · last termination {}",
                s.phase.map_or("?", |p| p.as_str()),
                s.ready,
                s.restarts,
                s.backoff,
                s.last_termination_reason.as_deref().unwrap_or("-")
            )?;
            if history.truncated.total() > 0 {
                writeln!(out, "(older entries dropped to stay bounded: {:?})", history.truncated)?;
            }
        }
    }
    Ok(())
}
