//! One line for people saying what a delivery means, recorded by the dispatcher and shown in history.

use super::{
    CommitSha, Event, EventKind, JobEvent, NoteEvent, NoteableType, PipelineEvent, Status,
    TagPushEvent,
};

/// Longest note excerpt quoted in a description.
const NOTE_MAX: usize = 80;
/// Longest name (tag, ref, user, job, header) quoted in a description.
const NAME_MAX: usize = 100;

/// Whether hoist uses deliveries with this `X-Gitlab-Event` at all; the receiver stores the others as `ignored`.
pub fn is_used(event_header: &str) -> bool {
    EventKind::from_header(event_header).is_some()
}

/// What `event` means, in one line, e.g. `tag v1.2.0 created on abc12345` or
/// `pipeline 42 for tag v1.2.0: manifest job waits in manual`.
///
/// `manifest_job` and `deploy_job` are the project's job names (`""` = none).
/// Everything quoted from the payload is cut short and stripped of control
/// characters, so the line is safe for logs and the dashboard.
pub fn describe(event: &Event, manifest_job: &str, deploy_job: &str) -> String {
    match event {
        Event::Pipeline(e) => pipeline(e, manifest_job, deploy_job),
        Event::TagPush(e) => tag_push(e),
        Event::Note(e) => note(e),
        Event::Job(e) => job(e),
        Event::Other { event } => format!("event {} (not used by hoist)", name(event)),
    }
}

fn tag_push(e: &TagPushEvent) -> String {
    let tag = name(e.tag_name());
    if e.is_deleted() {
        return format!("tag {tag} deleted");
    }
    match e.commit() {
        Some(sha) if e.before.is_zero() => format!("tag {tag} created on {}", name(sha.short())),
        Some(sha) => format!("tag {tag} moved to {}", name(sha.short())),
        None => format!("tag {tag} pushed (commit unknown)"),
    }
}

fn pipeline(e: &PipelineEvent, manifest_job: &str, deploy_job: &str) -> String {
    let a = &e.object_attributes;
    let subject = if a.tag {
        format!("for tag {}", name(&a.git_ref))
    } else if let Some(mr) = &e.merge_request {
        format!("for !{} on {}", mr.iid, name(&mr.source_branch))
    } else {
        format!("on {}", name(&a.git_ref))
    };
    let waiting = |job_name: &str| {
        !job_name.is_empty() && e.job(job_name).is_some_and(|b| b.status == Status::Manual)
    };
    let manifest_done = manifest_job.is_empty()
        || e.job(manifest_job)
            .is_none_or(|b| b.status == Status::Success);
    let state = if waiting(manifest_job) {
        "manifest job waits in manual".to_owned()
    } else if manifest_done && waiting(deploy_job) {
        "deploy job waits in manual".to_owned()
    } else {
        status(&a.status)
    };
    format!("pipeline {} {subject}: {state}", a.id)
}

fn job(e: &JobEvent) -> String {
    format!(
        "job {} {} (pipeline {}): {}",
        e.build_id,
        name(&e.build_name),
        e.pipeline_id,
        status(&e.build_status)
    )
}

fn note(e: &NoteEvent) -> String {
    let a = &e.object_attributes;
    let target = match &a.noteable_type {
        NoteableType::MergeRequest => match &e.merge_request {
            Some(mr) => format!("!{}", mr.iid),
            None => "a merge request".to_owned(),
        },
        NoteableType::Commit => {
            let known = |sha: &&CommitSha| !sha.is_zero();
            let sha = a
                .commit_id
                .as_ref()
                .filter(known)
                .or_else(|| e.commit.as_ref().map(|c| &c.id).filter(known));
            match sha {
                Some(sha) => format!("commit {}", name(sha.short())),
                None => "a commit".to_owned(),
            }
        }
        NoteableType::Issue => "an issue".to_owned(),
        NoteableType::Snippet => "a snippet".to_owned(),
        NoteableType::Other(other) if other.is_empty() => "something".to_owned(),
        NoteableType::Other(other) => name(other),
    };
    let what = match (e.confidential, a.system) {
        (_, true) => "system note",
        (true, false) => "confidential note",
        (false, false) => "note",
    };
    if e.is_edit() {
        let action = name(e.action().as_str());
        return format!("{what} {action} on {target} (ignored: edits never trigger)");
    }
    let author = if e.user.username.is_empty() {
        "someone".to_owned()
    } else {
        name(&e.user.username)
    };
    format!("{what} on {target} by {author}: {}", excerpt(&a.note))
}

fn status(status: &Status) -> String {
    match status.as_str() {
        "" => "status unknown".to_owned(),
        s => name(s),
    }
}

/// A name quoted from the payload; `?` when GitLab sent none, so the line still reads.
fn name(text: &str) -> String {
    if text.is_empty() {
        return "?".to_owned();
    }
    clean(text, NAME_MAX)
}

/// The note's first non-empty line, cut to [`NOTE_MAX`] characters.
fn excerpt(note: &str) -> String {
    let line = note.lines().map(str::trim).find(|l| !l.is_empty());
    clean(line.unwrap_or(""), NOTE_MAX)
}

/// `text` with control characters replaced by spaces, cut to `max` characters (marked with `…`).
pub(super) fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4));
    for (count, c) in text.chars().enumerate() {
        if count == max {
            out.push('…');
            break;
        }
        out.push(if is_unsafe(c) { ' ' } else { c });
    }
    out
}

/// Control characters and the invisible ones that reorder or hide text (bidi overrides, zero-width).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}
