//! No request to the control API may crash the target, except the ones whose job is to end it,
//! and none gets past the token check without the token.
#![no_main]
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use podlife::target::{control_router, Target, TargetConfig};
use tower::ServiceExt;

/// Endpoints that end the process or start faults on purpose.
const ENDING: [&str; 5] = ["/quitquitquit", "/exit", "/crash", "/kill", "/fault"];
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "PATCH"];
const TOKEN: &str = "fuzz-token";

fn target() -> &'static Arc<Target> {
    static TARGET: OnceLock<Arc<Target>> = OnceLock::new();
    let config = TargetConfig { control_token: Some(TOKEN.into()), ..TargetConfig::default() };
    TARGET.get_or_init(|| Target::new(config).expect("target without a state dir"))
}

fuzz_target!(|data: &[u8]| {
    // Layout: one byte of method (its high bit: send the token), then "path\nbody".
    let Some((&m, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (path, body) = text.split_once('\n').unwrap_or((&text, ""));
    if !path.starts_with('/') || ENDING.iter().any(|e| path.starts_with(e)) {
        return;
    }
    let with_token = m & 0x80 != 0;
    let mut builder = Request::builder().method(METHODS[usize::from(m & 0x7f) % METHODS.len()]).uri(path);
    if with_token {
        builder = builder.header("x-podlife-token", TOKEN);
    }
    let Ok(req) = builder.body(Body::from(body.to_string())) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let response = rt.block_on(control_router(target()).oneshot(req)).unwrap();
    assert!(response.status().as_u16() < 500, "{} {path}", response.status());
    if !with_token {
        assert!(matches!(response.status().as_u16(), 401 | 404), "{} {path} without the token", response.status());
    }
});
