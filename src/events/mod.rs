//! Typed GitLab webhook events (placeholder until the parser lands).

/// Whether hoist acts on an `X-Gitlab-Event` kind at all.
pub fn is_used(event: &str) -> bool {
    matches!(
        event,
        "Pipeline Hook" | "Tag Push Hook" | "Note Hook" | "Confidential Note Hook" | "Job Hook"
    )
}

/// A parsed delivery.
#[derive(Debug, Clone)]
pub enum Event {
    Other { event: String },
}

#[derive(Debug, thiserror::Error)]
#[error("cannot parse {0}")]
pub struct ParseError(String);

pub fn parse(event: &str, _body: &[u8]) -> Result<Event, ParseError> {
    Ok(Event::Other {
        event: event.to_string(),
    })
}

pub fn describe(event: &Event, _manifest_job: &str, _deploy_job: &str) -> String {
    match event {
        Event::Other { event } => format!("event {event} (not used by hoist)"),
    }
}
