//! The operator's pod watch, in either wire format, as one stream of the model's snapshots.
//!
//! - [`PodWire::Protobuf`] (the default) lists and watches pods in the apiserver's protobuf
//!   encoding and decodes them with [`pod_proto`](super::pod_proto). kube-runtime's watcher
//!   reads JSON only, so this module takes its ListWatch steps over: a paginated list, a watch
//!   from the list's version with bookmarks, a resumed watch when one ends, a relist after
//!   410 Gone. The events and errors are kube-runtime's own types, so the operator's loop and
//!   the watcher's back-off take either stream as they are.
//! - [`PodWire::Json`] is kube-runtime's watcher over [`LeanPod`]: for an apiserver (or a proxy
//!   in front of it) that does not serve protobuf, and to compare the two in a benchmark.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use kube::api::{ListParams, WatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::io::StreamReader;

use super::lean_pod::LeanPod;
use super::pod_proto::{self, PodPage, PodWatchEvent};
use crate::lifecycle::PodSnapshot;

/// How the operator reads pods from the apiserver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PodWire {
    /// The apiserver's protobuf, decoded field by field into the model (about a third of the
    /// bytes of JSON, and cheaper to decode).
    #[default]
    Protobuf,
    /// JSON, through kube-runtime's watcher.
    Json,
}

/// Pods per list page, as kube-runtime's watcher asks.
const PAGE: u32 = 500;
/// The apiserver ends a watch after this; the stream then resumes from its last version.
const WATCH_SECONDS: u32 = 290;
/// A watch silent for longer than its own timeout plus this is taken as dead.
const IDLE_MARGIN: Duration = Duration::from_secs(10);
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const PROTOBUF_WATCH: &str = "application/vnd.kubernetes.protobuf;stream=watch";
/// The largest frame accepted: a pod cannot exceed etcd's 1.5 MiB request limit.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// The pods of one scope (all namespaces or one), read as protobuf.
#[derive(Clone)]
struct ProtoPods {
    client: Client,
    /// `/api/v1/pods` or `/api/v1/namespaces/NS/pods`.
    path: String,
}

impl ProtoPods {
    fn new(client: Client, namespace: Option<&str>) -> ProtoPods {
        let path = match namespace {
            Some(ns) => format!("/api/v1/namespaces/{ns}/pods"),
            None => "/api/v1/pods".to_string(),
        };
        ProtoPods { client, path }
    }

    /// Sends a request asking for protobuf; a failure status becomes `kube::Error::Api`.
    async fn send(&self, request: http::Request<Vec<u8>>, accept: &'static str) -> Result<http::Response<kube::client::Body>, kube::Error> {
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(http::header::ACCEPT, http::HeaderValue::from_static(accept));
        // As kube's JSON watch does: the response's compression would be undone per frame.
        parts.headers.insert(http::header::ACCEPT_ENCODING, http::HeaderValue::from_static("identity"));
        let response = self.client.send(http::Request::from_parts(parts, kube::client::Body::from(body))).await?;
        let code = response.status();
        if code.is_success() {
            let content_type = response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if !content_type.starts_with(PROTOBUF) {
                return Err(kube::Error::Service(
                    format!(
                        "asked for protobuf, the apiserver (or a proxy in front of it) answered {content_type:?}: run with --pod-wire json"
                    )
                    .into(),
                ));
            }
            return Ok(response);
        }
        let bytes = response.into_body().collect().await?.to_bytes();
        let status = pod_proto::decode_status(&bytes)
            .or_else(|_| serde_json::from_slice::<kube::core::Status>(&bytes))
            .unwrap_or_else(|_| kube::core::Status::failure(&String::from_utf8_lossy(&bytes), "").with_code(code.as_u16()));
        Err(kube::Error::Api(Box::new(status)))
    }

    /// One page of the list.
    async fn list(&self, lp: &ListParams) -> Result<PodPage, kube::Error> {
        let request = kube::core::Request::new(&self.path).list(lp).map_err(kube::Error::BuildRequest)?;
        let response = self.send(request, PROTOBUF).await?;
        let bytes = response.into_body().collect().await?.to_bytes();
        pod_proto::decode_pod_list(&bytes).map_err(decode_error)
    }

    /// A watch from `version`: one decoded event per length-prefixed frame.
    async fn watch(&self, wp: &WatchParams, version: &str) -> Result<BoxStream<'static, Result<PodWatchEvent, kube::Error>>, kube::Error> {
        let request = kube::core::Request::new(&self.path).watch(wp, version).map_err(kube::Error::BuildRequest)?;
        let response = self.send(request, PROTOBUF_WATCH).await?;
        let body = response.into_body().into_data_stream().map_err(std::io::Error::other);
        let codec = LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec();
        let frames = FramedRead::new(StreamReader::new(body), codec);
        // A connection that fails or closes mid-frame (an apiserver restart, a proxy's cut,
        // the client's read timeout) ends the watch; the caller resumes from its last version,
        // so nothing is lost, and a watch that cannot start again is the error that counts.
        Ok(frames
            .scan((), |(), frame| {
                futures::future::ready(match frame {
                    Ok(frame) => Some(pod_proto::decode_watch_frame(&frame).map_err(decode_error)),
                    Err(e) => {
                        tracing::debug!(error = %e, "pod watch connection ended");
                        None
                    }
                })
            })
            .boxed())
    }
}

/// A list of `limit` pods a page, with the scope's label selector if it has one.
fn list_params(labels: Option<&str>, limit: u32) -> ListParams {
    let lp = ListParams::default().limit(limit);
    match labels {
        Some(labels) => lp.labels(labels),
        None => lp,
    }
}

/// A watch the apiserver ends after `seconds`, with the scope's label selector if it has one.
fn watch_params(labels: Option<&str>, seconds: u32) -> WatchParams {
    let wp = WatchParams::default().timeout(seconds);
    match labels {
        Some(labels) => wp.labels(labels),
        None => wp,
    }
}

fn decode_error(e: pod_proto::ProtoError) -> kube::Error {
    kube::Error::Service(Box::new(e))
}

/// Where a protobuf pod watch is, as in kube-runtime's watcher (ListWatch).
enum State {
    /// Nothing listed yet, or the watch expired: list from the start.
    Empty,
    /// Within a paginated list: pods of the page not yet handed out, the next page's token.
    Listing {
        continue_token: Option<String>,
        pods: VecDeque<PodSnapshot>,
        version: Option<String>,
    },
    /// Listed (or a watch ended): start a watch from `version`.
    Listed {
        version: String,
    },
    Watching {
        version: String,
        stream: BoxStream<'static, Result<PodWatchEvent, kube::Error>>,
    },
}

/// One step: an item to yield (or none, to step again) and the next state.
async fn step(api: &ProtoPods, labels: Option<&str>, state: State) -> (Option<Result<Event<PodSnapshot>, watcher::Error>>, State) {
    match state {
        State::Empty => (Some(Ok(Event::Init)), State::Listing { continue_token: None, pods: VecDeque::new(), version: None }),
        State::Listing { continue_token, mut pods, version } => {
            if let Some(pod) = pods.pop_front() {
                return (Some(Ok(Event::InitApply(pod))), State::Listing { continue_token, pods, version });
            }
            if continue_token.is_none()
                && let Some(version) = version
            {
                return (Some(Ok(Event::InitDone)), State::Listed { version });
            }
            let mut lp = list_params(labels, PAGE);
            lp.continue_token = continue_token;
            match api.list(&lp).await {
                Ok(page) if page.resource_version.is_none() && page.continue_token.is_none() => {
                    (Some(Err(watcher::Error::NoResourceVersion)), State::Empty)
                }
                Ok(page) => {
                    (None, State::Listing { continue_token: page.continue_token, pods: page.pods.into(), version: page.resource_version })
                }
                Err(e) => (Some(Err(watcher::Error::InitialListFailed(e))), State::Empty),
            }
        }
        State::Listed { version } => match api.watch(&watch_params(labels, WATCH_SECONDS), &version).await {
            Ok(stream) => (None, State::Watching { version, stream }),
            Err(e) => (Some(Err(watcher::Error::WatchStartFailed(e))), State::Listed { version }),
        },
        State::Watching { version, mut stream } => {
            let idle = Duration::from_secs(u64::from(WATCH_SECONDS)) + IDLE_MARGIN;
            let next = tokio::time::timeout(idle, stream.next()).await.ok().flatten();
            match next {
                Some(Ok(PodWatchEvent::Added(pod) | PodWatchEvent::Modified(pod))) => applied(pod, stream, Event::Apply),
                Some(Ok(PodWatchEvent::Deleted(pod))) => applied(pod, stream, Event::Delete),
                Some(Ok(PodWatchEvent::Bookmark(version))) => (None, State::Watching { version, stream }),
                Some(Ok(PodWatchEvent::Error(status))) => {
                    // 410 Gone: the position is older than the apiserver's watch history.
                    let next = if status.code == 410 { State::Empty } else { State::Watching { version, stream } };
                    (Some(Err(watcher::Error::WatchError(Box::new(status)))), next)
                }
                Some(Err(e)) => (Some(Err(watcher::Error::WatchFailed(e))), State::Watching { version, stream }),
                None => (None, State::Listed { version }),
            }
        }
    }
}

/// An applied or deleted pod moves the watch's position to its version.
fn applied(
    pod: PodSnapshot,
    stream: BoxStream<'static, Result<PodWatchEvent, kube::Error>>,
    event: fn(PodSnapshot) -> Event<PodSnapshot>,
) -> (Option<Result<Event<PodSnapshot>, watcher::Error>>, State) {
    match pod.resource_version {
        Some(version) => (Some(Ok(event(pod))), State::Watching { version: version.to_string(), stream }),
        None => (Some(Err(watcher::Error::NoResourceVersion)), State::Empty),
    }
}

/// One scope's pods (all namespaces or one), in the wire format chosen.
#[derive(Clone)]
pub struct PodSource {
    wire: PodWire,
    proto: ProtoPods,
    json: Api<LeanPod>,
    labels: Option<String>,
}

impl PodSource {
    pub fn new(client: Client, namespace: Option<&str>, labels: Option<String>, wire: PodWire) -> PodSource {
        let json = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        PodSource { wire, proto: ProtoPods::new(client, namespace), json, labels }
    }

    /// The pods as snapshots: listed, then watched, relisted after 410. Errors are yielded and
    /// the stream goes on (put a back-off around it).
    pub fn snapshots(&self) -> BoxStream<'static, Result<Event<PodSnapshot>, watcher::Error>> {
        match self.wire {
            PodWire::Protobuf => {
                let start = (self.proto.clone(), self.labels.clone(), State::Empty);
                futures::stream::unfold(start, |(api, labels, mut state)| async move {
                    loop {
                        let (item, next) = step(&api, labels.as_deref(), state).await;
                        state = next;
                        if let Some(item) = item {
                            return Some((item, (api, labels, state)));
                        }
                    }
                })
                .boxed()
            }
            PodWire::Json => {
                let mut cfg = watcher::Config::default();
                if let Some(labels) = &self.labels {
                    cfg = cfg.labels(labels);
                }
                watcher::watcher(self.json.clone(), cfg).map_ok(snapshot_event).boxed()
            }
        }
    }

    /// A plain watch from `version` (no relisting), ended by the apiserver after `seconds`.
    pub async fn watch(&self, version: &str, seconds: u32) -> Result<BoxStream<'static, Result<PodWatchEvent, kube::Error>>, kube::Error> {
        let wp = watch_params(self.labels.as_deref(), seconds);
        match self.wire {
            PodWire::Protobuf => self.proto.watch(&wp, version).await,
            PodWire::Json => Ok(self.json.watch(&wp, version).await?.map_ok(watch_event).boxed()),
        }
    }

    /// The collection's current resourceVersion (a one-pod list).
    pub async fn collection_version(&self) -> Result<Option<u64>, kube::Error> {
        let lp = list_params(self.labels.as_deref(), 1);
        let version = match self.wire {
            PodWire::Protobuf => self.proto.list(&lp).await?.resource_version,
            PodWire::Json => self.json.list_metadata(&lp).await?.metadata.resource_version,
        };
        Ok(version.and_then(|v| v.parse().ok()))
    }
}

fn snapshot_event(event: Event<LeanPod>) -> Event<PodSnapshot> {
    match event {
        Event::Apply(LeanPod(pod)) => Event::Apply(PodSnapshot::from_pod(&pod)),
        Event::Delete(LeanPod(pod)) => Event::Delete(PodSnapshot::from_pod(&pod)),
        Event::Init => Event::Init,
        Event::InitApply(LeanPod(pod)) => Event::InitApply(PodSnapshot::from_pod(&pod)),
        Event::InitDone => Event::InitDone,
    }
}

/// One line of a JSON pod watch, decoded as the JSON path does (`LeanPod`, then the model's
/// trimming): the tests hold the protobuf decoder to it, and the model bench compares the two.
pub fn decode_json_watch_line(line: &str) -> Result<PodWatchEvent, serde_json::Error> {
    Ok(watch_event(serde_json::from_str(line)?))
}

fn watch_event(event: kube::api::WatchEvent<LeanPod>) -> PodWatchEvent {
    use kube::api::WatchEvent;
    match event {
        WatchEvent::Added(LeanPod(pod)) => PodWatchEvent::Added(PodSnapshot::from_pod(&pod)),
        WatchEvent::Modified(LeanPod(pod)) => PodWatchEvent::Modified(PodSnapshot::from_pod(&pod)),
        WatchEvent::Deleted(LeanPod(pod)) => PodWatchEvent::Deleted(PodSnapshot::from_pod(&pod)),
        WatchEvent::Bookmark(b) => PodWatchEvent::Bookmark(b.metadata.resource_version),
        WatchEvent::Error(status) => PodWatchEvent::Error(*status),
    }
}
