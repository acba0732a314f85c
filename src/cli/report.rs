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

/// What `report` is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Pod(String),
    /// `deployment/web`: the kind as the API names it, and the name.
    Workload {
        kind: &'static str,
        name: String,
    },
    /// `-l podlife.io/workload=web`: the reports matching a label selector.
    Selector(String),
}

impl Subject {
    /// Reads `POD`, `pod/POD` or `KIND/NAME`.
    ///
    /// # Errors
    /// A kind podlife does not follow, or an empty name.
    pub fn parse(given: &str) -> Result<Subject> {
        let bad = || Error::BadSubject { given: given.to_string() };
        match given.split_once('/') {
            None if !given.is_empty() => Ok(Subject::Pod(given.to_string())),
            Some((kind, name)) if !name.is_empty() && !name.contains('/') => {
                if matches!(kind.to_ascii_lowercase().as_str(), "pod" | "pods" | "po") {
                    return Ok(Subject::Pod(name.to_string()));
                }
                let kind = crate::lifecycle::workload::workload_kind(kind).ok_or_else(bad)?;
                Ok(Subject::Workload { kind, name: name.to_string() })
            }
            _ => Err(bad()),
        }
    }
}

/// The reports of a workload's pods, live and deleted (as long as the operator keeps deleted
/// pods' reports, `deletedTtl`), optionally only those alive in the last `since`.
///
/// # Errors
/// None match, or the API call fails.
pub async fn workload_reports(
    client: &Client,
    namespace: &str,
    subject: &Subject,
    since: Option<std::time::Duration>,
) -> Result<(String, Vec<PodLifecycle>)> {
    use crate::lifecycle::workload::{WORKLOAD_KIND_LABEL, WORKLOAD_LABEL, label_value};
    let api: Api<PodLifecycle> = Api::namespaced(client.clone(), namespace);
    let (title, params, owned_by) = match subject {
        // A Job or ReplicaSet may sit under a CronJob or Deployment, whose name the labels carry:
        // match those on the recorded chain instead.
        Subject::Workload { kind: kind @ ("Job" | "ReplicaSet"), name } => {
            (format!("{kind}/{name}"), ListParams::default(), Some((*kind, name.clone())))
        }
        Subject::Workload { kind, name } => (
            format!("{kind}/{name}"),
            ListParams::default().labels(&format!("{WORKLOAD_KIND_LABEL}={},{WORKLOAD_LABEL}={}", label_value(kind), label_value(name))),
            Some((*kind, name.clone())),
        ),
        Subject::Selector(selector) => (format!("-l {selector}"), ListParams::default().labels(selector), None),
        Subject::Pod(pod) => (pod.clone(), ListParams::default().labels(&format!("podlife.io/pod-name={}", label_value(pod))), None),
    };
    let earliest = since.and_then(|s| jiff::Timestamp::now().checked_sub(jiff::SignedDuration::try_from(s).ok()?).ok());
    let reports: Vec<PodLifecycle> = api
        .list(&params)
        .await?
        .items
        .into_iter()
        .filter(|r| match &owned_by {
            // Labels are shortened to 63 characters: the recorded chain decides.
            Some((kind, name)) => r
                .status
                .as_ref()
                .and_then(|h| h.owners.as_ref())
                .is_some_and(|o| o.chain.iter().any(|l| l.kind == *kind && &l.name == name)),
            None => true,
        })
        .filter(|r| earliest.is_none_or(|e| r.status.as_ref().is_none_or(|h| h.deleted_at.is_none_or(|d| d >= e))))
        .collect();
    if reports.is_empty() {
        return Err(Error::NoWorkloadReports {
            workload: title,
            namespace: namespace.to_string(),
            selector: matches!(subject, Subject::Selector(_)),
        });
    }
    Ok((title, reports))
}

/// Prints every pod of a workload on one time axis, with a per-pod summary.
///
/// # Errors
/// No reports match, or output fails.
pub async fn report_workload(
    client: &Client,
    namespace: &str,
    subject: &Subject,
    since: Option<std::time::Duration>,
    format: Format,
    width: usize,
    out: &mut impl Write,
) -> Result<()> {
    use crate::harness::workload;
    let (title, reports) = workload_reports(client, namespace, subject, since).await?;
    let histories: Vec<crate::lifecycle::PodHistory> = reports
        .into_iter()
        .map(|r| r.status.unwrap_or_else(|| crate::lifecycle::PodHistory::new(&r.spec.pod_name, &r.spec.pod_uid)))
        .collect();
    let now = jiff::Timestamp::now();
    let view = workload::view(&title, &histories, now);
    let timeline = workload::timeline(&view, &histories, now);
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&serde_json::json!({"workload": view, "pods": histories}))?)?,
        Format::Svg => write!(out, "{}", timeline.render_svg())?,
        Format::Html => write!(out, "{}", view.render_html(&timeline))?,
        Format::Human => {
            write!(out, "{}", timeline.render_text(width))?;
            write!(out, "\n{}", view.render_table())?;
        }
    }
    Ok(())
}

/// Prints why pod `pod` is where it is, and what ended its last runs.
///
/// # Errors
/// The report is missing, or output fails.
pub async fn explain(client: &Client, namespace: &str, pod: &str, json: bool, out: &mut impl Write) -> Result<()> {
    let report = find_report(client, namespace, pod).await?;
    let history = report.status.unwrap_or_else(|| crate::lifecycle::PodHistory::new(pod, &report.spec.pod_uid));
    let explanation = crate::lifecycle::explain::explain(&history, jiff::Timestamp::now());
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&explanation)?)?;
    } else {
        write!(out, "{}", explanation.render_text())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_read_as_kubectl_names_them() {
        assert_eq!(Subject::parse("web-1").unwrap(), Subject::Pod("web-1".into()));
        assert_eq!(Subject::parse("pod/web-1").unwrap(), Subject::Pod("web-1".into()));
        assert_eq!(Subject::parse("deploy/web").unwrap(), Subject::Workload { kind: "Deployment", name: "web".into() });
        assert_eq!(Subject::parse("cronjob/nightly").unwrap(), Subject::Workload { kind: "CronJob", name: "nightly".into() });
        for bad in ["service/web", "deployment/", "a/b/c", ""] {
            let e = Subject::parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not POD, KIND/NAME") && e.contains("deployment, statefulset"), "{bad}: {e}");
        }
    }
}
