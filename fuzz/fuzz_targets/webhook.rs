//! Fuzz target: the webhook parser never panics on any event name and body.
#![no_main]

use libfuzzer_sys::fuzz_target;

const EVENTS: &[&str] = &[
    "Pipeline Hook",
    "Job Hook",
    "Tag Push Hook",
    "Note Hook",
    "Confidential Note Hook",
    "Push Hook",
];

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let event = EVENTS[usize::from(*first) % EVENTS.len()];
    if let Ok(parsed) = hoist::events::parse(event, body) {
        let _ = hoist::events::describe(&parsed, "manifest", "deploy");
    }
});
