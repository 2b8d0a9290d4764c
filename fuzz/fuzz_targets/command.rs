//! Fuzz target: the `/deploy` parser never panics, and a deploy names a known environment or none.
#![no_main]

use hoist::command::{Command, parse};
use libfuzzer_sys::fuzz_target;

const ENVS: &[&str] = &["staging", "production", "qa"];

fuzz_target!(|data: &[u8]| {
    let note = String::from_utf8_lossy(data);
    if let Some(Ok(Command::Deploy { env: Some(env) })) = parse(&note, ENVS) {
        assert!(ENVS.contains(&env.as_str()));
    }
});
