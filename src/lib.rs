//! podlife: records every pod's life and drives the real kubelet's probes.
#![forbid(unsafe_code)]

pub mod cli;
pub mod crd;
pub mod harness;
pub mod lifecycle;
pub mod operator;
pub mod target;
pub mod telemetry;
