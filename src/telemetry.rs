//! Logging set-up shared by podlife's long-running binaries.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Structured logs on stderr: `json` for machines, `text` for people (coloured only on a
/// terminal). The filter comes from `PODLIFE_LOG`, else `default_filter`, as `target=level`
/// directives (`info,kube=warn`). Those are all podlife needs, and unlike `EnvFilter` they need
/// no regex engine, which keeps the target's image under a fifth of podinfo's (BENCHMARKS.md).
/// An unreadable `PODLIFE_LOG` falls back to the default.
pub fn init_logging(format: &str, default_filter: &str) {
    let filter: Targets = std::env::var("PODLIFE_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| default_filter.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if format == "json" {
        tracing_subscriber::registry().with(filter).with(layer.json()).init();
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        tracing_subscriber::registry().with(filter).with(layer.with_ansi(ansi)).init();
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::Targets;

    #[test]
    fn the_default_filters_parse_as_target_directives() {
        for (filter, target, level, enabled) in [
            ("info,kube=warn", "kube::client", tracing::Level::INFO, false),
            ("info,kube=warn", "podlife::operator", tracing::Level::INFO, true),
            ("info", "podlife::target", tracing::Level::DEBUG, false),
        ] {
            let targets: Targets = filter.parse().unwrap();
            assert_eq!(targets.would_enable(target, &level), enabled, "{filter} {target} {level}");
        }
    }
}
