//! The reference recorder: its own pod and event watches over the workload's namespaces,
//! straight to the apiserver (never through the operators' proxy). It resumes a broken watch
//! from the last resourceVersion it saw and relists on 410, noting each relist as a gap in
//! its own view. Every observation is stamped with when it arrived.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use podlife::audit::Reference;

#[derive(Default)]
pub struct Recording {
    pub reference: Reference,
    /// Relists after the first: moments the recorder itself may have missed something.
    pub gaps: Vec<(Timestamp, String)>,
    /// Every observation as a line of `e2e/record-fixture`'s format, for the model's tests.
    pub log: Option<std::io::BufWriter<std::fs::File>>,
}

impl Recording {
    fn write(&mut self, kind: &str, type_: Seen, object: &impl serde::Serialize) {
        use std::io::Write;
        let Some(log) = self.log.as_mut() else { return };
        let type_ = match type_ {
            Seen::Listed => "ADDED",
            Seen::Changed => "MODIFIED",
            Seen::Deleted => "DELETED",
        };
        let line = serde_json::json!({"observedAt": Timestamp::now().to_string(), "kind": kind, "type": type_, "object": object});
        let _ = writeln!(log, "{line}");
    }
}

pub struct Recorder {
    pub recording: Arc<Mutex<Recording>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn lock(r: &Mutex<Recording>) -> std::sync::MutexGuard<'_, Recording> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Recorder {
    /// Starts recording; with `log`, every observation is also written there.
    pub fn start(client: &Client, namespaces: &[String], log: Option<&std::path::Path>) -> Recorder {
        let file = log.and_then(|p| std::fs::File::create(p).ok()).map(std::io::BufWriter::new);
        let recording = Arc::new(Mutex::new(Recording { log: file, ..Recording::default() }));
        let mut tasks = Vec::new();
        for ns in namespaces {
            let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
            let rec = Arc::clone(&recording);
            tasks.push(tokio::spawn(record(
                pods,
                ListParams::default(),
                format!("pods in {ns}"),
                move |type_, pod: &Pod| {
                    let mut rec = lock(&rec);
                    rec.write("pod", type_, pod);
                    rec.reference.observe_pod(pod, Timestamp::now(), type_ == Seen::Deleted);
                },
                Arc::clone(&recording),
            )));
            let events: Api<Event> = Api::namespaced(client.clone(), ns);
            let rec = Arc::clone(&recording);
            tasks.push(tokio::spawn(record(
                events,
                ListParams::default().fields("involvedObject.kind=Pod"),
                format!("events in {ns}"),
                move |type_, e: &Event| {
                    if type_ != Seen::Deleted {
                        let mut rec = lock(&rec);
                        rec.write("event", type_, e);
                        rec.reference.observe_event(e, Timestamp::now());
                    }
                },
                Arc::clone(&recording),
            )));
        }
        Recorder { recording, tasks }
    }

    pub fn snapshot<T>(&self, f: impl FnOnce(&Recording) -> T) -> T {
        let mut rec = lock(&self.recording);
        if let Some(log) = rec.log.as_mut() {
            let _ = std::io::Write::flush(log);
        }
        f(&rec)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Listed,
    Changed,
    Deleted,
}

async fn record<K>(api: Api<K>, lp: ListParams, what: String, mut f: impl FnMut(Seen, &K), recording: Arc<Mutex<Recording>>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut version: Option<String> = None;
    let mut first = true;
    loop {
        let Some(from) = version.clone() else {
            match api.list(&lp).await {
                Ok(list) => {
                    if !std::mem::take(&mut first) {
                        lock(&recording).gaps.push((Timestamp::now(), format!("{what}: relisted")));
                    }
                    for item in &list.items {
                        f(Seen::Listed, item);
                    }
                    version = list.metadata.resource_version;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
            continue;
        };
        let mut wp = WatchParams::default().timeout(290);
        if let Some(fields) = &lp.field_selector {
            wp = wp.fields(fields);
        }
        let mut stream = match api.watch(&wp, &from).await {
            Ok(s) => s.boxed(),
            Err(kube::Error::Api(e)) if e.code == 410 => {
                version = None;
                continue;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(x) | WatchEvent::Modified(x)) => {
                    version = x.meta().resource_version.clone().or(version);
                    f(Seen::Changed, &x);
                }
                Ok(WatchEvent::Deleted(x)) => {
                    version = x.meta().resource_version.clone().or(version);
                    f(Seen::Deleted, &x);
                }
                Ok(WatchEvent::Bookmark(b)) => version = Some(b.metadata.resource_version),
                Ok(WatchEvent::Error(e)) if e.code == 410 => {
                    version = None;
                    break;
                }
                Ok(WatchEvent::Error(_)) | Err(_) => break,
            }
        }
    }
}
