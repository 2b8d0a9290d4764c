//! Every text hoist posts to GitLab, rendered by functions.

/// `value` on one line: `\r` and `\n` become spaces, so it can never start a line.
pub fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

/// `value` fit for a code span: one line, backticks replaced by `'`.
pub fn code_safe(value: &str) -> String {
    one_line(value).replace('`', "'")
}
