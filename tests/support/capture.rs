//! Input of the suite-wide secret scan: every output a test sees is also kept on disk.
//!
//! When `HOIST_TEST_OUTPUT` is set (`scripts/test` sets it), [`capture`] appends text to
//! `$HOIST_TEST_OUTPUT/<kind>/<test binary>-<pid>.txt`. Kinds: `log` (hoist's log lines),
//! `response` (hoist's HTTP answers), `comment` (what hoist wrote on GitLab), `page` (the
//! dashboard as a browser shows it) and `cli` (the binary's stdout and stderr).
//! `tests/secret_scan.rs` reads them all after the suite ran.

use std::io::Write;
use std::path::PathBuf;

/// Where captured output goes, when the suite scan is on.
pub fn output_dir() -> Option<PathBuf> {
    std::env::var_os("HOIST_TEST_OUTPUT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Appends `text` to this process's file of `kind`.
pub fn capture(kind: &str, text: &str) {
    let Some(dir) = output_dir() else {
        return;
    };
    if text.is_empty() {
        return;
    }
    let dir = dir.join(kind);
    let _ = std::fs::create_dir_all(&dir);
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".into());
    let path = dir.join(format!("{binary}-{}.txt", std::process::id()));
    let mut buf = Vec::with_capacity(text.len() + 1);
    buf.extend_from_slice(text.as_bytes());
    buf.push(b'\n');
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per call: O_APPEND keeps concurrent captures whole.
        let _ = f.write_all(&buf);
    }
}

/// A process's stdout and stderr.
pub fn capture_output(out: &std::process::Output) {
    capture("cli", &String::from_utf8_lossy(&out.stdout));
    capture("cli", &String::from_utf8_lossy(&out.stderr));
}

/// A `MakeWriter` for in-process hoist's tracing output: each line goes to `log`.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        capture("log", String::from_utf8_lossy(buf).trim_end_matches('\n'));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'w self) -> LogWriter {
        LogWriter
    }
}

/// Sends hoist's log lines of this test process to `log` (once; no-op without the scan).
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if output_dir().is_none() {
        return;
    }
    ONCE.call_once(|| {
        let subscriber = hoist::logging::subscriber(
            hoist::logging::LogFormat::Text,
            Some("hoist=debug"),
            LogWriter,
            false,
        );
        // A test that installed its own subscriber keeps it.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}
