//! Pods read in the apiserver's protobuf encoding, decoded straight into the model's
//! [`PodSnapshot`].
//!
//! Why: at 10k pods, decoding JSON was most of what the operator's pod watch cost. A pod's JSON
//! is about three times its protobuf, the apiserver encodes JSON for this watcher only (client-go
//! informers ask for protobuf, and the watch cache encodes once per format), and even skipped
//! JSON fields must be tokenised. Protobuf lets a decoder skip a whole unread field (the spec's
//! containers, `managedFields`) by its length.
//!
//! The messages below are a subset of `k8s.io/api/core/v1/generated.proto` and
//! `k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto` (v0.34): only the fields the model
//! reads, with the upstream field numbers. prost skips every other field unparsed.
//!
//! The Go encoder writes a non-pointer string or number even when empty or zero, where JSON's
//! `omitempty` leaves it out; and `metav1.Time` has a nanoseconds field, where its JSON form has
//! whole seconds (Go writes it as 0, `ProtoTime` leaves nanoseconds out on purpose, but another
//! writer need not). The conversion normalises both, so a snapshot equals the one from the
//! pod's JSON.

use jiff::Timestamp;
use prost::Message;

use crate::lifecycle::snapshot::{ConditionSnapshot, ContainerKind, ContainerSnapshot, ContainerState, Phase, PodSnapshot, Termination};
use crate::lifecycle::workload::OwnerLink;

/// The prefix of every protobuf-encoded Kubernetes object (`runtime.Unknown` follows).
const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("not a Kubernetes protobuf object (no k8s\\0 prefix)")]
    NoMagic,
    #[error("protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("expected a {expected}, got a {got}")]
    WrongKind { expected: &'static str, got: String },
}

// --- runtime and meta/v1 ------------------------------------------------------------------------

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(bytes = "vec", optional, tag = "1")]
    api_version: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    kind: Option<Vec<u8>>,
}

/// One frame of a protobuf watch stream (`metav1.WatchEvent`; its object is a `RawExtension`).
#[derive(Clone, PartialEq, Message)]
struct WatchEvent {
    #[prost(bytes = "vec", optional, tag = "1")]
    type_: Option<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    object: Option<RawExtension>,
}

#[derive(Clone, PartialEq, Message)]
struct RawExtension {
    #[prost(bytes = "vec", optional, tag = "1")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct ListMeta {
    #[prost(bytes = "vec", optional, tag = "2")]
    resource_version: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    continue_: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct Status {
    #[prost(bytes = "vec", optional, tag = "3")]
    message: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    reason: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "6")]
    code: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct Time {
    #[prost(int64, optional, tag = "1")]
    seconds: Option<i64>,
    #[prost(int32, optional, tag = "2")]
    nanos: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(bytes = "vec", optional, tag = "1")]
    name: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    namespace: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    uid: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "6")]
    resource_version: Option<Vec<u8>>,
    #[prost(message, optional, tag = "8")]
    creation_timestamp: Option<Time>,
    #[prost(message, optional, tag = "9")]
    deletion_timestamp: Option<Time>,
    #[prost(message, repeated, tag = "13")]
    owner_references: Vec<OwnerReference>,
}

#[derive(Clone, PartialEq, Message)]
struct OwnerReference {
    #[prost(bytes = "vec", optional, tag = "1")]
    kind: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    name: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    uid: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    api_version: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "6")]
    controller: Option<bool>,
}

// --- core/v1 ------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, Message)]
struct Pod {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<PodSpec>,
    #[prost(message, optional, tag = "3")]
    status: Option<PodStatus>,
}

#[derive(Clone, PartialEq, Message)]
struct PodList {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ListMeta>,
    #[prost(message, repeated, tag = "2")]
    items: Vec<Pod>,
}

#[derive(Clone, PartialEq, Message)]
struct PodSpec {
    #[prost(message, repeated, tag = "20")]
    init_containers: Vec<Container>,
}

/// An init container's name and restart policy: `Always` makes it a sidecar.
#[derive(Clone, PartialEq, Message)]
struct Container {
    #[prost(bytes = "vec", optional, tag = "1")]
    name: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "24")]
    restart_policy: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct PodStatus {
    #[prost(bytes = "vec", optional, tag = "1")]
    phase: Option<Vec<u8>>,
    #[prost(message, repeated, tag = "2")]
    conditions: Vec<PodCondition>,
    #[prost(message, repeated, tag = "8")]
    container_statuses: Vec<ContainerStatus>,
    #[prost(message, repeated, tag = "10")]
    init_container_statuses: Vec<ContainerStatus>,
    #[prost(message, repeated, tag = "13")]
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Clone, PartialEq, Message)]
struct PodCondition {
    #[prost(bytes = "vec", optional, tag = "1")]
    type_: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    status: Option<Vec<u8>>,
    #[prost(message, optional, tag = "4")]
    last_transition_time: Option<Time>,
    #[prost(bytes = "vec", optional, tag = "5")]
    reason: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "6")]
    message: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct ContainerStatus {
    #[prost(bytes = "vec", optional, tag = "1")]
    name: Option<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    state: Option<ContainerStateProto>,
    #[prost(message, optional, tag = "3")]
    last_state: Option<ContainerStateProto>,
    #[prost(bool, optional, tag = "4")]
    ready: Option<bool>,
    #[prost(int32, optional, tag = "5")]
    restart_count: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "8")]
    container_id: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "9")]
    started: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct ContainerStateProto {
    #[prost(message, optional, tag = "1")]
    waiting: Option<Waiting>,
    #[prost(message, optional, tag = "2")]
    running: Option<Running>,
    #[prost(message, optional, tag = "3")]
    terminated: Option<Terminated>,
}

#[derive(Clone, PartialEq, Message)]
struct Waiting {
    #[prost(bytes = "vec", optional, tag = "1")]
    reason: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    message: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct Running {
    #[prost(message, optional, tag = "1")]
    started_at: Option<Time>,
}

#[derive(Clone, PartialEq, Message)]
struct Terminated {
    #[prost(int32, optional, tag = "1")]
    exit_code: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    signal: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "3")]
    reason: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    message: Option<Vec<u8>>,
    #[prost(message, optional, tag = "5")]
    started_at: Option<Time>,
    #[prost(message, optional, tag = "6")]
    finished_at: Option<Time>,
    #[prost(bytes = "vec", optional, tag = "7")]
    container_id: Option<Vec<u8>>,
}

// --- decoding -----------------------------------------------------------------------------------

/// A decoded watch frame.
#[derive(Debug, PartialEq)]
pub enum PodWatchEvent {
    Added(PodSnapshot),
    Modified(PodSnapshot),
    Deleted(PodSnapshot),
    /// A bookmark: the watch has seen everything up to this resourceVersion.
    Bookmark(String),
    /// The apiserver ended the watch with a Status (410 Gone when the position has expired).
    Error(kube::core::Status),
}

/// One page of a pod list.
pub struct PodPage {
    pub pods: Vec<PodSnapshot>,
    pub resource_version: Option<String>,
    /// The token for the next page; `None` on the last.
    pub continue_token: Option<String>,
}

/// Strips the `k8s\0` prefix and the `runtime.Unknown` envelope, checking the kind.
fn unwrap_object(bytes: &[u8], expected: &'static str) -> Result<Vec<u8>, ProtoError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(ProtoError::NoMagic)?;
    let unknown = Unknown::decode(rest)?;
    let kind = text_or_empty(unknown.type_meta.and_then(|t| t.kind));
    if kind != expected {
        return Err(ProtoError::WrongKind { expected, got: kind });
    }
    Ok(unknown.raw.unwrap_or_default())
}

/// A protobuf-encoded `Status` (an error body, or a watch's ERROR event) as kube's error type.
pub fn decode_status(bytes: &[u8]) -> Result<kube::core::Status, ProtoError> {
    let s = Status::decode(unwrap_object(bytes, "Status")?.as_slice())?;
    let code = s.code.and_then(|c| u16::try_from(c).ok()).unwrap_or_default();
    Ok(kube::core::Status::failure(&text_or_empty(s.message), &text_or_empty(s.reason)).with_code(code))
}

/// A protobuf-encoded `PodList` page.
pub fn decode_pod_list(bytes: &[u8]) -> Result<PodPage, ProtoError> {
    let list = PodList::decode(unwrap_object(bytes, "PodList")?.as_slice())?;
    let meta = list.metadata.unwrap_or_default();
    Ok(PodPage {
        pods: list.items.into_iter().map(snapshot_of).collect(),
        resource_version: non_empty(meta.resource_version),
        continue_token: non_empty(meta.continue_),
    })
}

/// One frame of a protobuf watch stream (the length prefix already taken off).
pub fn decode_watch_frame(frame: &[u8]) -> Result<PodWatchEvent, ProtoError> {
    let event = WatchEvent::decode(frame)?;
    let raw = event.object.and_then(|o| o.raw).unwrap_or_default();
    Ok(match event.type_.as_deref().unwrap_or_default() {
        b"ADDED" => PodWatchEvent::Added(decode_pod(&raw)?),
        b"MODIFIED" => PodWatchEvent::Modified(decode_pod(&raw)?),
        b"DELETED" => PodWatchEvent::Deleted(decode_pod(&raw)?),
        b"BOOKMARK" => {
            // Only the version is set; kept as the apiserver wrote it, for the next watch.
            let pod = Pod::decode(unwrap_object(&raw, "Pod")?.as_slice())?;
            PodWatchEvent::Bookmark(text_or_empty(pod.metadata.and_then(|m| m.resource_version)))
        }
        _ => PodWatchEvent::Error(decode_status(&raw)?),
    })
}

/// The frames of a protobuf watch stream saved whole, as `e2e/record-proto-fixtures` records
/// one: each a 4-byte big-endian length, then the frame. For the tests and the model bench; the
/// operator reads a live stream with tokio-util's `LengthDelimitedCodec`. Stops at a cut frame.
pub fn recorded_frames(mut stream: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while let Some((len, rest)) = stream.split_first_chunk::<4>()
        && let Some((frame, rest)) = rest.split_at_checked(u32::from_be_bytes(*len) as usize)
    {
        frames.push(frame);
        stream = rest;
    }
    frames
}

/// A protobuf-encoded Pod (a GET's body) as the model's snapshot.
pub fn decode_pod(bytes: &[u8]) -> Result<PodSnapshot, ProtoError> {
    Ok(snapshot_of(Pod::decode(unwrap_object(bytes, "Pod")?.as_slice())?))
}

/// A string field. Read as bytes and converted here, replacing invalid UTF-8 as the
/// apiserver's JSON encoder does: Go's protobuf writes whatever bytes a writer stored, and
/// prost would fail the whole message (a whole list page) on them.
fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn text_or_empty(bytes: Option<Vec<u8>>) -> String {
    text(bytes).unwrap_or_default()
}

/// `omitempty`: the Go encoder writes empty strings that JSON leaves out.
fn non_empty(bytes: Option<Vec<u8>>) -> Option<String> {
    text(bytes.filter(|b| !b.is_empty()))
}

/// A `metav1.Time` as its JSON form reads: whole seconds, and the zero time as none. Go's
/// encoder writes the zero time as an empty message and any other time with both fields, even
/// when they are 0 (every time in the recorded `pod.pb` carries `nanos: 0`), so an absent
/// `seconds` is the zero time and `seconds: 0` is 1970, as JSON's `1970-01-01T00:00:00Z` is.
fn time_of(t: Option<Time>) -> Option<Timestamp> {
    Timestamp::from_second(t?.seconds?).ok()
}

fn state_of(s: ContainerStateProto) -> Option<ContainerState> {
    if let Some(w) = s.waiting {
        return Some(ContainerState::Waiting { reason: non_empty(w.reason), message: non_empty(w.message) });
    }
    if let Some(r) = s.running {
        return Some(ContainerState::Running { started_at: time_of(r.started_at) });
    }
    s.terminated.map(|t| ContainerState::Terminated(termination_of(t)))
}

fn termination_of(t: Terminated) -> Termination {
    Termination {
        exit_code: t.exit_code.unwrap_or_default(),
        signal: t.signal.filter(|&s| s != 0),
        reason: non_empty(t.reason),
        message: non_empty(t.message),
        started_at: time_of(t.started_at),
        finished_at: time_of(t.finished_at),
        container_id: non_empty(t.container_id),
    }
}

fn container_of(c: ContainerStatus, kind: ContainerKind) -> ContainerSnapshot {
    ContainerSnapshot {
        name: text_or_empty(c.name),
        kind,
        container_id: non_empty(c.container_id),
        state: c.state.and_then(state_of),
        last_terminated: c.last_state.and_then(|s| s.terminated).map(termination_of),
        ready: c.ready.unwrap_or_default(),
        started: c.started,
        restart_count: c.restart_count.unwrap_or_default(),
    }
}

/// The same trimming as [`PodSnapshot::from_pod`], from the protobuf messages, moving strings
/// instead of cloning them.
fn snapshot_of(pod: Pod) -> PodSnapshot {
    let meta = pod.metadata.unwrap_or_default();
    let status = pod.status.unwrap_or_default();
    let sidecars: Vec<Vec<u8>> = pod
        .spec
        .into_iter()
        .flat_map(|s| s.init_containers)
        .filter(|c| c.restart_policy.as_deref() == Some(b"Always".as_slice()))
        .filter_map(|c| c.name)
        .collect();
    let mut containers = Vec::with_capacity(status.init_container_statuses.len() + status.container_statuses.len());
    for c in status.init_container_statuses {
        let kind = if c.name.as_ref().is_some_and(|n| sidecars.contains(n)) { ContainerKind::Sidecar } else { ContainerKind::Init };
        containers.push(container_of(c, kind));
    }
    containers.extend(status.container_statuses.into_iter().map(|c| container_of(c, ContainerKind::App)));
    containers.extend(status.ephemeral_container_statuses.into_iter().map(|c| container_of(c, ContainerKind::Ephemeral)));
    let controller = meta.owner_references.into_iter().find(|o| o.controller == Some(true)).map(|o| OwnerLink {
        kind: text_or_empty(o.kind),
        name: text_or_empty(o.name),
        uid: text_or_empty(o.uid),
        api_version: text_or_empty(o.api_version),
    });
    PodSnapshot {
        controller,
        namespace: text_or_empty(meta.namespace),
        name: text_or_empty(meta.name),
        uid: text_or_empty(meta.uid),
        resource_version: meta.resource_version.as_deref().and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok()),
        created_at: time_of(meta.creation_timestamp),
        deleted_at: time_of(meta.deletion_timestamp),
        phase: Phase::parse(text(status.phase).as_deref()),
        conditions: status
            .conditions
            .into_iter()
            .map(|c| ConditionSnapshot {
                type_: text_or_empty(c.type_),
                status: text_or_empty(c.status),
                reason: non_empty(c.reason),
                message: non_empty(c.message),
                last_transition: time_of(c.last_transition_time),
            })
            .collect(),
        containers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::lean_pod::LeanPod;
    use crate::operator::pod_watch::decode_json_watch_line;

    // Recorded from the project's local cluster (v1.34.4), both formats from the same
    // resourceVersion: a pod with an init container, a native sidecar and a crash-looping app
    // under the real kubelet, from creation to deletion (e2e/record-proto-fixtures).
    const WATCH_PB: &[u8] = include_bytes!("../../tests/fixtures/proto/watch.pb");
    const WATCH_JSON: &str = include_str!("../../tests/fixtures/proto/watch.jsonl");
    // A pod whose status was written by hand with every field the model reads: owners, a
    // signal, a sidecar, waiting and terminated states with messages.
    const POD_PB: &[u8] = include_bytes!("../../tests/fixtures/proto/pod.pb");
    const POD_JSON: &str = include_str!("../../tests/fixtures/proto/pod.json");
    const LIST_PB: &[u8] = include_bytes!("../../tests/fixtures/proto/list.pb");
    const STATUS_404_PB: &[u8] = include_bytes!("../../tests/fixtures/proto/status-404.pb");

    fn from_json(pod: &str) -> PodSnapshot {
        let LeanPod(pod) = serde_json::from_str(pod).unwrap();
        PodSnapshot::from_pod(&pod)
    }

    /// Catches a wrong field number, an empty string or a zero signal kept where JSON omits
    /// it, nanoseconds kept where JSON has whole seconds, a sidecar taken for an init
    /// container: every recorded frame must decode to what the same event's JSON gives.
    #[test]
    fn every_watch_frame_equals_its_json_event() {
        let frames = recorded_frames(WATCH_PB);
        let lines: Vec<&str> = WATCH_JSON.lines().collect();
        assert_eq!(frames.len(), lines.len());
        assert!(frames.len() > 15, "the recording covers the pod's life");
        for (frame, line) in frames.iter().zip(&lines) {
            let json = decode_json_watch_line(line).unwrap();
            assert_eq!(decode_watch_frame(frame).unwrap(), json, "{line}");
        }
        // The recording holds what the test claims to cover.
        let decoded: Vec<PodWatchEvent> = frames.iter().map(|f| decode_watch_frame(f).unwrap()).collect();
        let kinds: Vec<ContainerKind> = decoded
            .iter()
            .filter_map(|e| match e {
                PodWatchEvent::Modified(p) => Some(p.containers.iter().map(|c| c.kind)),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(kinds.contains(&ContainerKind::Sidecar) && kinds.contains(&ContainerKind::Init) && kinds.contains(&ContainerKind::App));
        assert!(decoded.iter().any(|e| matches!(e, PodWatchEvent::Deleted(p) if p.deleted_at.is_some())));
        assert!(decoded.iter().any(|e| matches!(e, PodWatchEvent::Bookmark(v) if !v.is_empty())));
        assert!(decoded.iter().any(|e| matches!(e, PodWatchEvent::Modified(p) if p.containers.iter().any(|c| c.restart_count > 0))));
    }

    /// Catches the fields only a hand-written status reaches: owners, a signal, messages.
    #[test]
    fn a_pod_with_every_read_field_equals_its_json() {
        let proto = decode_pod(POD_PB).unwrap();
        let json = from_json(POD_JSON);
        assert_eq!(proto, json);
        assert!(proto.controller.is_some());
        let side = proto.containers.iter().find(|c| c.name == "side").unwrap();
        assert_eq!((side.kind, side.last_terminated.as_ref().unwrap().signal), (ContainerKind::Sidecar, Some(9)));
    }

    /// Catches nanoseconds kept (Go writes 0, a writer in another language may not; JSON readers, and
    /// reports written from JSON, see whole seconds), the zero time read as 1970, and 1970 (both
    /// fields written as 0) read as the zero time.
    #[test]
    fn times_read_as_their_json_form() {
        let t = |seconds, nanos| Some(Time { seconds: Some(seconds), nanos: Some(nanos) });
        assert_eq!(time_of(t(1_764_000_000, 123_456_000)), Some(Timestamp::from_second(1_764_000_000).unwrap()));
        assert_eq!(time_of(Some(Time::default())), None);
        assert_eq!(time_of(t(0, 0)), Some(Timestamp::UNIX_EPOCH));
        assert_eq!(time_of(None), None);
    }

    #[test]
    fn a_list_page_has_its_pods_version_and_continue_token() {
        let page = decode_pod_list(LIST_PB).unwrap();
        assert_eq!(page.pods.len(), 1);
        assert!(page.resource_version.as_deref().is_some_and(|v| v.parse::<u64>().is_ok()));
        assert!(page.continue_token.is_some(), "limit=1 of two pods has a next page");
    }

    /// Catches a watch's ERROR event or an error body read as anything but its Status: a 410
    /// must reach the watcher as code 410, or it would not relist.
    #[test]
    fn statuses_decode_with_their_code_in_a_body_and_in_a_watch_frame() {
        let status = decode_status(STATUS_404_PB).unwrap();
        assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
        let frame = WatchEvent { type_: Some(b"ERROR".to_vec()), object: Some(RawExtension { raw: Some(STATUS_404_PB.to_vec()) }) };
        match decode_watch_frame(&frame.encode_to_vec()).unwrap() {
            PodWatchEvent::Error(s) => assert_eq!(s.code, 404),
            other => panic!("not an error: {other:?}"),
        }
    }

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(b"v1".to_vec()), kind: Some(kind.as_bytes().to_vec()) }),
            raw: Some(raw),
        };
        [MAGIC, unknown.encode_to_vec().as_slice()].concat()
    }

    /// Catches one pod's invalid UTF-8 (a protobuf writer can store it; JSON readers get
    /// U+FFFD) failing the whole list page, and with it the scope's list, again and again.
    #[test]
    fn invalid_utf8_in_one_pod_is_replaced_not_fatal_to_its_page() {
        let condition =
            PodCondition { type_: Some(b"Ready".to_vec()), message: Some(b"bad \xff byte".to_vec()), ..PodCondition::default() };
        let pod = |uid: &[u8]| Pod {
            metadata: Some(ObjectMeta { uid: Some(uid.to_vec()), ..ObjectMeta::default() }),
            status: Some(PodStatus { conditions: vec![condition.clone()], ..PodStatus::default() }),
            ..Pod::default()
        };
        let list = PodList {
            metadata: Some(ListMeta { resource_version: Some(b"7".to_vec()), continue_: None }),
            items: vec![pod(b"a"), pod(b"b")],
        };
        let page = decode_pod_list(&envelope("PodList", list.encode_to_vec())).unwrap();
        assert_eq!(page.pods.len(), 2);
        assert_eq!(page.pods[0].conditions[0].message.as_deref(), Some("bad \u{fffd} byte"));
    }

    #[test]
    fn wrong_input_is_an_error_not_an_empty_pod() {
        assert!(matches!(decode_pod(b"{\"kind\":\"Pod\"}"), Err(ProtoError::NoMagic)));
        assert!(matches!(decode_pod(STATUS_404_PB), Err(ProtoError::WrongKind { .. })));
        assert!(matches!(decode_pod_list(&POD_PB[..POD_PB.len() / 2]), Err(ProtoError::Decode(_)) | Err(ProtoError::WrongKind { .. })));
    }
}
