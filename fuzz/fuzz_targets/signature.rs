//! Fuzz target: the Standard Webhooks check never panics, and never passes without the key.
#![no_main]

use hoist::webhook::auth::{AuthHeaders, verify_signature};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    // Header values and body separated by NUL bytes: id, timestamp, signature list, body.
    let mut parts = data.splitn(4, |b| *b == 0);
    let mut text = || {
        parts
            .next()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default()
    };
    let (id, ts, sig) = (text(), text(), text());
    let body = parts.next().unwrap_or_default();
    let headers = AuthHeaders {
        gitlab_token: None,
        webhook_id: Some(&id),
        webhook_timestamp: Some(&ts),
        webhook_signature: Some(&sig),
    };
    let now = ts.parse::<i64>().unwrap_or(0);
    assert!(verify_signature(KEY, &headers, body, now).is_err());
});
