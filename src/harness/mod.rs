//! The harness: turns recorded histories into answers people can read. Timelines now;
//! experiments and verdicts build on them.

pub mod pod;
pub mod timeline;
pub mod verdict;
