//! Typed GitLab webhook events: turns a stored delivery (`X-Gitlab-Event` and raw body) into what hoist reads.
//!
//! The receiver stores bodies untouched; the worker calls [`parse`] and hands the
//! [`Event`] on. Payload shapes follow `shared/GITLAB.md`. GitLab adds fields over
//! time and sends `null` for many, so every struct accepts missing, null and
//! unknown fields; only a wrong JSON type in a field hoist reads fails a parse.
//!
//! Dispatch is on the header, which is what GitLab labelled the delivery with.
//! `object_kind` is a cross-check: when present it must agree with the header,
//! else [`ParseError::KindMismatch`] (a mislabelled delivery is never guessed at).
//! It is the fallback only when the header is empty. A header hoist does not use
//! gives [`Event::Other`] without reading the body, even if `object_kind` looks
//! familiar (a `System Hook` carrying a `tag_push` must not deploy).

mod common;
mod describe;
mod ids;
mod job;
mod note;
mod pipeline;
mod status;
mod tag_push;
mod time;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use common::{Commit, Environment, Project, User};
pub use describe::{describe, is_used};
pub use ids::{CommitSha, JobId, PipelineId, ProjectId, UserId};
pub use job::JobEvent;
pub use note::{LastCommit, NoteAttributes, NoteEvent, NoteMergeRequest};
pub use pipeline::{Build, PipelineAttributes, PipelineEvent, PipelineMergeRequest};
pub use status::{NoteAction, NoteableType, Status};
pub use tag_push::TagPushEvent;
pub use time::Timestamp;

/// One webhook delivery, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Pipeline(PipelineEvent),
    TagPush(TagPushEvent),
    /// `Note Hook` and `Confidential Note Hook` (see [`NoteEvent::confidential`]).
    Note(NoteEvent),
    Job(JobEvent),
    /// A kind hoist does not use, named by its `X-Gitlab-Event` header; the body is not read.
    Other {
        event: String,
    },
}

/// The kinds of delivery hoist tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Pipeline,
    TagPush,
    Note,
    ConfidentialNote,
    Job,
    /// Anything else: stored as `ignored`.
    Other,
}

impl EventKind {
    const USED: [EventKind; 5] = [
        Self::Pipeline,
        Self::TagPush,
        Self::Note,
        Self::ConfidentialNote,
        Self::Job,
    ];

    /// The kind an `X-Gitlab-Event` value names, or `None` for one hoist does not use.
    /// Surrounding whitespace and ASCII case are ignored.
    pub fn from_header(header: &str) -> Option<Self> {
        let header = header.trim();
        Self::USED.into_iter().find(|kind| {
            kind.header()
                .is_some_and(|name| name.eq_ignore_ascii_case(header))
        })
    }

    fn from_object_kind(object_kind: &str) -> Option<Self> {
        match object_kind {
            "pipeline" => Some(Self::Pipeline),
            "tag_push" => Some(Self::TagPush),
            "note" => Some(Self::Note),
            "build" => Some(Self::Job),
            _ => None,
        }
    }

    /// The `X-Gitlab-Event` value GitLab sends for this kind.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Self::Pipeline => Some("Pipeline Hook"),
            Self::TagPush => Some("Tag Push Hook"),
            Self::Note => Some("Note Hook"),
            Self::ConfidentialNote => Some("Confidential Note Hook"),
            Self::Job => Some("Job Hook"),
            Self::Other => None,
        }
    }

    /// The body's `object_kind` for this kind (both note hooks say `note`, job hooks `build`).
    pub fn object_kind(self) -> Option<&'static str> {
        match self {
            Self::Pipeline => Some("pipeline"),
            Self::TagPush => Some("tag_push"),
            Self::Note | Self::ConfidentialNote => Some("note"),
            Self::Job => Some("build"),
            Self::Other => None,
        }
    }

    /// A short stable name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pipeline => "pipeline",
            Self::TagPush => "tag_push",
            Self::Note => "note",
            Self::ConfidentialNote => "confidential_note",
            Self::Job => "job",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a delivery could not be read. Messages name the place in the body, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not valid JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("the {kind} payload is not a JSON object")]
    NotAnObject { kind: EventKind },
    #[error("the {kind} payload has a field of the wrong type at {path}: expected {expected}")]
    InvalidField {
        kind: EventKind,
        /// Where in the body, e.g. `builds[2].id`.
        path: String,
        /// What hoist expected there (never the value found).
        expected: String,
    },
    #[error("X-Gitlab-Event says {header:?} but the body's object_kind is {object_kind:?}")]
    KindMismatch {
        header: String,
        /// Cut to a few dozen characters.
        object_kind: String,
    },
    #[error("no X-Gitlab-Event header and no object_kind hoist knows in the body")]
    UnknownKind,
}

/// Longest header or `object_kind` echoed into an error.
const ECHO_MAX: usize = 40;

/// Parses one delivery; never panics, whatever the bytes.
pub fn parse(x_gitlab_event: &str, body: &[u8]) -> Result<Event, ParseError> {
    parse_checked(x_gitlab_event, body, None)
}

/// [`parse`] for a body already known to be text: it is not checked for UTF-8 again
/// (the worker's bodies are, and the check was a tenth of a pipeline hook's parse).
pub fn parse_text(x_gitlab_event: &str, body: &str) -> Result<Event, ParseError> {
    parse_checked(x_gitlab_event, body.as_bytes(), Some(body))
}

/// [`parse`], with `text` the body when it is already known to be UTF-8.
fn parse_checked(
    x_gitlab_event: &str,
    body: &[u8],
    text: Option<&str>,
) -> Result<Event, ParseError> {
    let header = x_gitlab_event.trim();
    let kind = if header.is_empty() {
        probe_object_kind(body)?
            .as_deref()
            .and_then(EventKind::from_object_kind)
            .ok_or(ParseError::UnknownKind)?
    } else {
        match EventKind::from_header(header) {
            Some(kind) => kind,
            None => {
                return Ok(Event::Other {
                    event: header.to_owned(),
                });
            }
        }
    };
    let header = kind.header().unwrap_or_default();
    Ok(match kind {
        EventKind::Pipeline => Event::Pipeline(typed(kind, header, body, text)?),
        EventKind::TagPush => Event::TagPush(typed(kind, header, body, text)?),
        EventKind::Note | EventKind::ConfidentialNote => {
            let mut note: NoteEvent = typed(kind, header, body, text)?;
            let attributes = &note.object_attributes;
            note.confidential = kind == EventKind::ConfidentialNote
                || note.event_type.as_deref() == Some("confidential_note")
                || attributes.internal
                || attributes.confidential;
            Event::Note(note)
        }
        EventKind::Job => Event::Job(typed(kind, header, body, text)?),
        EventKind::Other => Event::Other {
            event: header.to_owned(),
        },
    })
}

/// Payloads that carry their own `object_kind`, for the cross-check with the header.
trait ObjectKind {
    fn object_kind(&self) -> &str;
}

macro_rules! object_kind {
    ($($ty:ty),*) => {$(
        impl ObjectKind for $ty {
            fn object_kind(&self) -> &str {
                &self.object_kind
            }
        }
    )*};
}

object_kind!(PipelineEvent, TagPushEvent, NoteEvent, JobEvent);

fn typed<T: DeserializeOwned + ObjectKind>(
    kind: EventKind,
    header: &str,
    body: &[u8],
    text: Option<&str>,
) -> Result<T, ParseError> {
    // serde would read a JSON array into a struct field by field: only an object is a payload.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ParseError::NotAnObject { kind },
                Err(err) => classify(kind, ".", &err),
            },
        );
    }
    let expected = kind.object_kind().unwrap_or_default();
    let mismatch = |found: &str| ParseError::KindMismatch {
        header: echo(header),
        object_kind: echo(found),
    };
    // The happy path parses plainly; only a failure is parsed again to learn the field's path.
    // From text checked whole (once), serde skips checking each string again.
    let plain = match text.map_or_else(|| std::str::from_utf8(body), Ok) {
        Ok(text) => serde_json::from_str::<T>(text),
        Err(_) => serde_json::from_slice::<T>(body),
    };
    if let Ok(event) = plain {
        let found = event.object_kind();
        if !found.is_empty() && found != expected {
            return Err(mismatch(found));
        }
        return Ok(event);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let event: T = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(event) => event,
        Err(err) => {
            // A body of another kind fails on its own fields: say "mislabelled", not "wrong type".
            if let Ok(Some(found)) = probe_object_kind(body)
                && found != expected
            {
                return Err(mismatch(&found));
            }
            let path = err.path().to_string();
            return Err(classify(kind, &path, err.inner()));
        }
    };
    deserializer
        .end()
        .map_err(|err| classify(kind, ".", &err))?;
    let found = event.object_kind();
    if !found.is_empty() && found != expected {
        return Err(mismatch(found));
    }
    Ok(event)
}

fn classify(kind: EventKind, path: &str, err: &serde_json::Error) -> ParseError {
    match err.classify() {
        serde_json::error::Category::Data if path == "." => ParseError::NotAnObject { kind },
        serde_json::error::Category::Data => ParseError::InvalidField {
            kind,
            path: path.to_owned(),
            expected: expected_part(err),
        },
        _ => ParseError::NotJson {
            line: err.line(),
            column: err.column(),
        },
    }
}

/// The "expected …" half of a serde data error. The other half quotes the value found,
/// which comes from the body and must not reach logs; the last `, expected ` is serde's own.
fn expected_part(err: &serde_json::Error) -> String {
    let message = err.to_string();
    let Some((_, expected)) = message.rsplit_once(", expected ") else {
        return "another type".to_owned();
    };
    let expected = match expected.rfind(" at line ") {
        Some(end) => &expected[..end],
        None => expected,
    };
    echo(expected)
}

/// Reads only `object_kind` (everything else is skipped unparsed).
fn probe_object_kind(body: &[u8]) -> Result<Option<String>, ParseError> {
    #[derive(Deserialize)]
    struct Probe {
        object_kind: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(probe) => Ok(match probe.object_kind {
            Some(serde_json::Value::String(kind)) => Some(kind),
            _ => None,
        }),
        Err(err) => Err(classify(EventKind::Other, ".", &err)),
    }
}

/// A bounded, printable copy of a short value for error messages.
fn echo(text: &str) -> String {
    describe::clean(text, ECHO_MAX)
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Pipeline(_) => EventKind::Pipeline,
            Self::TagPush(_) => EventKind::TagPush,
            Self::Note(note) if note.confidential => EventKind::ConfidentialNote,
            Self::Note(_) => EventKind::Note,
            Self::Job(_) => EventKind::Job,
            Self::Other { .. } => EventKind::Other,
        }
    }

    /// The project's `path_with_namespace`, when the payload carries one.
    pub fn project_path(&self) -> Option<&str> {
        let path = match self {
            Self::Pipeline(e) => &e.project.path_with_namespace,
            Self::TagPush(e) => &e.project.path_with_namespace,
            Self::Note(e) => &e.project.path_with_namespace,
            Self::Job(e) => &e.project.path_with_namespace,
            Self::Other { .. } => return None,
        };
        Some(path.as_str()).filter(|p| !p.is_empty())
    }

    /// The project's id: the top-level `project_id` where the hook has one, else `project.id`.
    pub fn project_id(&self) -> Option<ProjectId> {
        let (top, nested) = match self {
            Self::Pipeline(e) => (ProjectId(0), e.project.id),
            Self::TagPush(e) => (e.project_id, e.project.id),
            Self::Note(e) => (e.project_id, e.project.id),
            Self::Job(e) => (e.project_id, e.project.id),
            Self::Other { .. } => return None,
        };
        [top, nested].into_iter().find(|id| id.0 != 0)
    }
}
