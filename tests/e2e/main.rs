//! e2e tests against a real cluster with a real kubelet. Run through `e2e/test`.
mod cli;
mod experiment;
mod helm;
mod operator;
mod security;
mod smoke;
mod support;
mod target;
mod workload;
