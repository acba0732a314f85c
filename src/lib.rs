//! podlife: records every pod's life and drives the real kubelet's probes.
#![forbid(unsafe_code)]

pub mod crd;
pub mod lifecycle;
pub mod operator;
pub mod target;
