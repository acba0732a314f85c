//! podlife: records every pod's life and drives the real kubelet's probes.
#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod crd;
pub mod harness;
pub mod lifecycle;
pub mod operator;
pub mod target;
pub mod telemetry;

/// Locks a mutex even if a panic poisoned it: one panicking task must not take every later
/// probe answer, report or experiment down with it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
