//! The harness: turns recorded histories into answers people can read. Timelines now;
//! experiments and verdicts build on them.

pub mod conformance;
pub mod evidence;
pub mod mutation;
pub mod pod;
pub mod render;
pub mod rollout;
pub mod timeline;
pub mod verdict;
pub mod workload;
