//! Every text hoist posts to GitLab (commit comments, commit statuses, MR replies), rendered by functions.
//!
//! One rule shapes all of it: GitLab runs a line of a note that starts with `/`
//! as a quick action, with hoist's rights. So every line starts with text or
//! Markdown written here, and every value a user controls (refs, usernames, env
//! and job names, reasons, task errors, URLs) goes inside a code span, a link or
//! after a fixed prefix, flattened to one line by [`one_line`] so it cannot start
//! a line of its own. Values in code spans also lose their backticks
//! ([`code_safe`]) so they cannot close the span.

mod render;
mod types;

#[cfg(test)]
mod tests;

pub use render::{
    commit_status, doctor_reply, help_reply, mr_reply_accepted, mr_reply_finished,
    mr_reply_parse_error, mr_reply_refused, run_finished, run_started, status_reply, superseded,
};
pub use types::{
    CommitState, EnvStatus, LiveService, RunReport, RunState, RunSummary, ServiceReport,
    ServiceState, Trigger,
};

/// GitLab's limit on a commit status `description`, in characters.
pub const STATUS_DESCRIPTION_MAX: usize = 255;

/// `value` on one line: line breaks (also Unicode ones) become spaces.
pub fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}' => ' ',
            c => c,
        })
        .collect()
}

/// `value` fit for a code span: one line, backticks replaced by `'`.
pub fn code_safe(value: &str) -> String {
    one_line(value).replace('`', "'")
}

/// `value` as an inline code span (an empty value shows as `(none)`).
pub fn code(value: &str) -> String {
    let safe = code_safe(value);
    if safe.trim().is_empty() {
        "(none)".to_string()
    } else {
        format!("`{safe}`")
    }
}

/// A digest shortened for people: `sha256:` and the first 12 hex digits.
pub fn short_digest(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() > 12 && hex.is_char_boundary(12) => format!("sha256:{}", &hex[..12]),
        _ => digest.to_string(),
    }
}

/// `ms` for people: `850 ms`, `42 s`, `1m 23s`, `2h 03m`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms} ms"),
        0..60 => format!("{s} s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}
