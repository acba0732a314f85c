//! `kubectl podlife list [-A]`: the reports, one line per pod, as `kubectl get` shows objects.

use std::io::Write;

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::crd::PodLifecycle;

/// One line of the list.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub namespace: String,
    pub pod: String,
    pub phase: String,
    pub ready: String,
    pub restarts: i32,
    pub backoff: String,
    pub last_termination: String,
    pub deleted: bool,
    pub age_seconds: i64,
}

fn row(r: &PodLifecycle, now: jiff::Timestamp) -> Row {
    let s = r.status.clone().unwrap_or_default();
    Row {
        namespace: r.namespace().unwrap_or_default(),
        pod: r.spec.pod_name.clone(),
        phase: s.summary.phase.map_or("-", |p| p.as_str()).to_string(),
        ready: if s.summary.ready.is_empty() { "-".into() } else { s.summary.ready.clone() },
        restarts: s.summary.restarts,
        backoff: if s.summary.backoff.is_empty() { "-".into() } else { s.summary.backoff.clone() },
        last_termination: s.summary.last_termination_reason.unwrap_or_else(|| "-".into()),
        deleted: s.deleted_at.is_some(),
        age_seconds: r.creation_timestamp().map_or(0, |t| now.duration_since(t.0).as_secs()),
    }
}

/// kubectl's age: 45s, 12m, 3h, 2d.
fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The reports of `namespace` (or of every namespace), oldest first.
///
/// # Errors
/// The API call fails.
pub async fn rows(client: &Client, namespace: Option<&str>) -> Result<Vec<Row>, kube::Error> {
    let api: Api<PodLifecycle> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let now = jiff::Timestamp::now();
    let mut rows: Vec<Row> = api.list(&ListParams::default()).await?.items.iter().map(|r| row(r, now)).collect();
    rows.sort_by(|a, b| {
        (&a.namespace, std::cmp::Reverse(a.age_seconds), &a.pod).cmp(&(&b.namespace, std::cmp::Reverse(b.age_seconds), &b.pod))
    });
    Ok(rows)
}

/// Prints rows as a table (with a NAMESPACE column when listing every namespace) or as JSON.
///
/// # Errors
/// Output fails.
pub fn print(rows: &[Row], all_namespaces: bool, json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", serde_json::to_string_pretty(rows).map_err(std::io::Error::other)?);
    }
    let mut table: Vec<Vec<String>> =
        vec![["NAMESPACE", "POD", "PHASE", "READY", "RESTARTS", "BACK-OFF", "LAST TERMINATION", "AGE"].map(String::from).to_vec()];
    for r in rows {
        let pod = if r.deleted { format!("{} (deleted)", r.pod) } else { r.pod.clone() };
        table.push(vec![
            r.namespace.clone(),
            pod,
            r.phase.clone(),
            r.ready.clone(),
            r.restarts.to_string(),
            r.backoff.clone(),
            r.last_termination.clone(),
            age(r.age_seconds),
        ]);
    }
    let skip = usize::from(!all_namespaces);
    let widths: Vec<usize> = (0..table[0].len()).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for r in &table {
        let cells: Vec<String> = r.iter().zip(&widths).skip(skip).map(|(cell, w)| format!("{cell:<w$}")).collect();
        writeln!(out, "{}", cells.join("   ").trim_end())?;
    }
    if rows.is_empty() {
        writeln!(out, "(no PodLifecycle reports{})", if all_namespaces { "" } else { " in this namespace; -A lists every namespace" })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_like_kubectl_get() {
        let rows = vec![
            Row {
                namespace: "a".into(),
                pod: "web-1".into(),
                phase: "Running".into(),
                ready: "1/1".into(),
                restarts: 3,
                backoff: "40s".into(),
                last_termination: "Error".into(),
                deleted: false,
                age_seconds: 7300,
            },
            Row {
                namespace: "b".into(),
                pod: "job".into(),
                phase: "Succeeded".into(),
                ready: "0/1".into(),
                restarts: 0,
                backoff: "-".into(),
                last_termination: "Completed".into(),
                deleted: true,
                age_seconds: 59,
            },
        ];
        let mut out = Vec::new();
        print(&rows, true, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   POD ") && lines[0].ends_with("AGE"), "{text}");
        assert!(lines[1].starts_with("a           web-1") && lines[1].ends_with("2h"), "{text}");
        assert!(lines[2].contains("job (deleted)") && lines[2].ends_with("59s"), "{text}");
        let mut one = Vec::new();
        print(&rows[..1], false, false, &mut one).unwrap();
        assert!(String::from_utf8(one).unwrap().starts_with("POD "), "no NAMESPACE column for one namespace");
        assert_eq!(age(90), "90s");
        assert_eq!(age(3 * 86400), "3d");
    }
}
