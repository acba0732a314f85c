//! The pure lifecycle model: turns a pod's status snapshots and events into its history.
//!
//! No I/O and no async: values in, values out. The operator feeds it from watches; tests feed
//! it status sequences recorded from the real kubelet.

pub mod backoff;
pub mod budget;
pub mod explain;
pub mod history;
pub mod recording;
pub mod snapshot;
pub mod workload;

pub use backoff::BackoffProfile;
pub use history::{Change, PodHistory, Source};
pub use snapshot::{EventSnapshot, PodSnapshot};

#[cfg(test)]
mod tests;
