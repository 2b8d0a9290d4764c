//! Log output: human-readable text by default, one JSON object per line with `--log-format json`.
//!
//! A run's lines carry `run_id`, `project` and `env` through the `run` span the
//! executor and the outbox open; in JSON they are in `span` (the innermost) and
//! `spans` (all of them, outermost first).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The filter: `RUST_LOG` when set, else `info`.
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// A subscriber writing to `writer` in `format`, filtered by `filter` (or `RUST_LOG`/`info`).
/// Text is coloured only when `ansi` (stderr is a terminal).
pub fn subscriber<W>(
    format: LogFormat,
    filter_directives: Option<&str>,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter_directives.map(EnvFilter::new).unwrap_or_else(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    }
}

/// Installs the process-wide subscriber writing to stderr.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let _ =
        tracing::subscriber::set_global_default(subscriber(format, None, std::io::stderr, ansi));
}
