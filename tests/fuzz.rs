//! Fuzzing on stable, in every `cargo test`: property-driven inputs for the two surfaces that
//! take text from outside, the target's control API (through its real router, as the kubelet's
//! neighbours and the operator reach it) and the probe script parser. The lifecycle model's
//! target is `any_status_and_event_sequence_keeps_the_invariants` in `src/lifecycle/tests.rs`.
//! The cargo-fuzz targets in `fuzz/` are the long, coverage-guided version (`e2e/fuzz`).

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use podlife::target::script::Script;
use podlife::target::{Target, TargetConfig, control_router};
use proptest::prelude::*;
use tower::ServiceExt;

const TOKEN: &str = "fuzz-token";

/// Endpoints whose job is to end the process or load it: not driven here.
const ENDING: [&str; 6] = ["/quitquitquit", "/exit", "/crash", "/kill", "/fault", "/sigterm"];

fn target() -> &'static Arc<Target> {
    static TARGET: OnceLock<Arc<Target>> = OnceLock::new();
    TARGET.get_or_init(|| Target::new(TargetConfig { control_token: Some(TOKEN.into()), ..TargetConfig::default() }).unwrap())
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}

/// A path made of the API's own words and noise, so that real routes are reached often.
fn arb_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("scripts".to_string()),
        Just("liveness".to_string()),
        Just("readiness".to_string()),
        Just("startup".to_string()),
        Just("hooks".to_string()),
        Just("prestop".to_string()),
        Just("tcp".to_string()),
        Just("hits".to_string()),
        Just("reset".to_string()),
        Just("metrics".to_string()),
        "[a-z%0-9.?=&-]{0,12}",
    ];
    proptest::collection::vec(segment, 0..4).prop_map(|s| format!("/{}", s.join("/")))
}

/// How a request presents the token.
#[derive(Debug, Clone, Copy)]
enum Credential {
    None,
    Header,
    Bearer,
    Wrong,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_control_api_answers_everything_and_only_with_the_token(
        method in prop_oneof![Just("GET"), Just("PUT"), Just("POST"), Just("DELETE"), Just("PATCH")],
        path in arb_path(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        credential in prop_oneof![Just(Credential::None), Just(Credential::Header), Just(Credential::Bearer), Just(Credential::Wrong)],
    ) {
        prop_assume!(!ENDING.iter().any(|e| path.starts_with(e)));
        let mut req = Request::builder().method(method).uri(&path);
        req = match credential {
            Credential::None => req,
            Credential::Header => req.header("x-podlife-token", TOKEN),
            Credential::Bearer => req.header("authorization", format!("Bearer {TOKEN}")),
            Credential::Wrong => req.header("x-podlife-token", "fuzz-tokem"),
        };
        let Ok(req) = req.body(Body::from(body)) else { return Ok(()) };
        let response = runtime().block_on(control_router(target()).oneshot(req)).unwrap();
        let status = response.status().as_u16();
        prop_assert!(status < 500, "{method} {path} -> {status}");
        match credential {
            Credential::None | Credential::Wrong => prop_assert_eq!(status, 401, "{} {} without the token", method, path),
            Credential::Header | Credential::Bearer => prop_assert_ne!(status, 401),
        }
    }

    #[test]
    fn the_script_parser_takes_any_text_and_points_inside_it(text in ".{0,300}") {
        if let Err(e) = Script::parse(&text) {
            prop_assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{e} for {text:?}");
        }
    }

    #[test]
    fn scripts_of_the_grammar_parse(steps in proptest::collection::vec((
        prop_oneof![Just("ok"), Just("fail"), Just("fail 3"), Just("fail 503"), Just("hang"), Just("slow 2s"), Just("close"), Just("redirect /x")],
        prop_oneof![Just(" for 5s"), Just(" 2 times"), Just(" 1 hit"), Just(" for 500ms")],
    ), 1..6), repeat in any::<bool>()) {
        let mut text = steps.iter().map(|(a, s)| format!("{a}{s}")).collect::<Vec<_>>().join(", then ");
        if repeat {
            text.push_str(", repeat");
        }
        let script = Script::parse(&text);
        prop_assert!(script.is_ok(), "{text}: {script:?}");
        prop_assert_eq!(script.unwrap().steps.len(), steps.len());
    }
}
