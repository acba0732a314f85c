//! Logging set-up shared by podlife's long-running binaries.

/// Structured logs on stderr: `json` for machines, `text` for people (coloured only on a
/// terminal). The filter comes from `PODLIFE_LOG`, else `default_filter`.
pub fn init_logging(format: &str, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PODLIFE_LOG").unwrap_or_else(|_| default_filter.into());
    if format == "json" {
        tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}
