//! Sends the outbox: comments, statuses, replies and reactions, in the order they were decided.
//!
//! An item is marked sent after GitLab accepted it. A transient failure keeps it
//! (and everything after it, to keep the order) for the next attempt; a
//! permanent one is marked failed with GitLab's reason.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::Instrument;

use super::Engine;
use crate::events::CommitSha;
use crate::gitlab::{CommitState, GitlabError, NoteId};
use crate::store::leases::{Lease, OUTBOX_LEASE};
use crate::store::runs::OutboxItem;

/// Attempts before a transiently failing write is given up.
const MAX_ATTEMPTS: i64 = 20;

pub async fn sender(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut lease: Option<Lease> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        // One sender across replicas keeps GitLab writes in the order they were decided.
        lease = hold_outbox(&engine, lease.take()).await;
        let held = match &lease {
            Some(l) => l.clone(),
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(engine.options.lease_ttl / 3) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        let stalled = match send_pending(&engine, &held).await {
            Ok(stalled) => stalled,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                true
            }
        };
        let pause = if stalled {
            engine.options.outbox_retry
        } else {
            std::time::Duration::from_secs(5)
        };
        tokio::select! {
            _ = engine.outbox_changed.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Renews the outbox lease, or takes it when it is free; None while another replica sends.
async fn hold_outbox(engine: &Engine, held: Option<Lease>) -> Option<Lease> {
    let store = &engine.store;
    if let Some(lease) = held {
        match store.renew_lease(&lease).await {
            Ok(true) => return Some(lease),
            Ok(false) => tracing::warn!("outbox lease lost; another replica sends"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the outbox lease");
                return None;
            }
        }
    }
    let ttl = engine.options.lease_ttl;
    match store
        .claim_lease(OUTBOX_LEASE, &engine.instance, None, ttl)
        .await
    {
        Ok(lease) => lease,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the outbox lease");
            None
        }
    }
}

/// Sends what is pending; true when a transient failure stopped it.
pub async fn send_pending(
    engine: &Engine,
    lease: &Lease,
) -> Result<bool, crate::store::StoreError> {
    loop {
        let items = engine.store.pending_outbox(50).await?;
        if items.is_empty() {
            return Ok(false);
        }
        for item in items {
            // The fence check before each write: a sender that lost the lease stops.
            if !engine.store.holds(lease).await? {
                tracing::warn!("outbox lease lost; another replica sends");
                return Ok(true);
            }
            // A run's writes log with the run's fields, like the run's own lines.
            let span = match item.run_id {
                Some(run_id) => tracing::info_span!(
                    "run",
                    run_id,
                    project = %item.project,
                    env = item.env.as_deref().unwrap_or("")
                ),
                None => tracing::info_span!("outbox", project = %item.project),
            };
            if send_one(engine, &item).instrument(span).await? {
                return Ok(true);
            }
        }
    }
}

/// Sends one item and records the answer; true when a transient failure should pause the outbox.
///
/// A comment or MR note is marked `sending` before it goes out. One found `sending` was
/// maybe posted by an attempt whose answer was lost (hoist stopped): GitLab is asked
/// first, so it is never posted twice. Statuses and reactions are idempotent.
async fn send_one(engine: &Engine, item: &OutboxItem) -> Result<bool, crate::store::StoreError> {
    let comment = matches!(item.kind.as_str(), "commit_comment" | "mr_note");
    let result = if comment && item.state == "sending" {
        match already_posted(engine, item).await {
            Ok(true) => {
                tracing::info!(outbox = item.id, kind = %item.kind, "already posted before hoist stopped; not posting again");
                Ok(())
            }
            Ok(false) => send(engine, item).await,
            Err(e) => Err(e),
        }
    } else {
        if comment {
            engine.store.mark_sending(item.id).await?;
        }
        send(engine, item).await
    };
    match result {
        Ok(()) => engine.store.outbox_result(item.id, "sent", None).await?,
        Err(e) if e.is_transient() && item.attempts + 1 < MAX_ATTEMPTS => {
            tracing::warn!(outbox = item.id, kind = %item.kind, error = %e, "GitLab write failed; will retry");
            engine
                .store
                .outbox_result(item.id, "pending", Some(&e.to_string()))
                .await?;
            return Ok(true);
        }
        Err(e) => {
            tracing::error!(outbox = item.id, kind = %item.kind, error = %e, "GitLab write failed for good");
            engine
                .store
                .outbox_result(item.id, "failed", Some(&e.to_string()))
                .await?;
        }
    }
    Ok(false)
}

async fn send(engine: &Engine, item: &OutboxItem) -> Result<(), GitlabError> {
    let gitlab = &engine.gitlab;
    let project = item.project.as_str();
    match item.kind.as_str() {
        "commit_comment" => {
            gitlab
                .comment_on_commit(project, &CommitSha::from(item.target.clone()), &item.body)
                .await
        }
        "commit_status" => {
            let status: StatusBody = serde_json::from_str(&item.body)
                .map_err(|e| GitlabError::Protocol(format!("bad status row: {e}")))?;
            let state = match status.state.as_str() {
                "pending" => CommitState::Pending,
                "running" => CommitState::Running,
                "success" => CommitState::Success,
                "canceled" => CommitState::Canceled,
                _ => CommitState::Failed,
            };
            gitlab
                .set_commit_status(
                    project,
                    &CommitSha::from(item.target.clone()),
                    state,
                    &status.name,
                    status.target_url.as_deref(),
                    &status.description,
                )
                .await
        }
        "mr_note" => {
            let (iid, internal) = mr_target(item)?;
            gitlab
                .reply_on_mr(project, iid, &item.body, internal)
                .await
                .map(|_| ())
        }
        "doctor" => {
            let (iid, internal) = mr_target(item)?;
            let Some(config) = engine.config.projects.iter().find(|p| p.path == project) else {
                return Err(GitlabError::Protocol(format!(
                    "project {project} is no longer configured"
                )));
            };
            let (user_id, username) = item.body.split_once(' ').unwrap_or(("0", &item.body));
            let user = crate::events::UserId::from(user_id.parse::<u64>().unwrap_or(0));
            // The reply shows how hoist is set up (hosts, hook state): developers and up only.
            let minimum = crate::config::Role::Developer;
            let level = gitlab.member_role(project, user).await?.unwrap_or(0);
            let body = if level < minimum.access_level() {
                crate::report::mr_reply_refused(
                    username,
                    &format!(
                        "/deploy doctor shows how hoist is set up; it needs at least the {} role",
                        crate::policy::role_name(minimum)
                    ),
                )
            } else {
                let doctor = crate::doctor::Doctor {
                    config: &engine.config,
                    gitlab: gitlab.as_ref(),
                    registry: &engine.registry,
                    swarm: &engine.swarm,
                };
                let checks = doctor.project(config).await;
                crate::report::doctor_reply(username, project, &checks)
            };
            gitlab
                .reply_on_mr(project, iid, &body, internal)
                .await
                .map(|_| ())
        }
        "react" => {
            let (iid, note) = item
                .target
                .split_once('/')
                .ok_or_else(|| GitlabError::Protocol("bad reaction target".into()))?;
            let iid = parse_iid(iid)?;
            let note: u64 = note
                .parse()
                .map_err(|_| GitlabError::Protocol("bad note id".into()))?;
            gitlab.react(project, iid, NoteId(note), &item.body).await
        }
        other => Err(GitlabError::Protocol(format!(
            "unknown outbox kind {other}"
        ))),
    }
}

/// Whether GitLab already has the comment `item` would post (same body, by hoist's user).
async fn already_posted(engine: &Engine, item: &OutboxItem) -> Result<bool, GitlabError> {
    let project = item.project.as_str();
    let existing = match item.kind.as_str() {
        "commit_comment" => {
            engine
                .gitlab
                .commit_comments(project, &CommitSha::from(item.target.clone()))
                .await?
        }
        _ => engine.gitlab.mr_notes(project, mr_target(item)?.0).await?,
    };
    let bot = engine.bot().map(|u| u.username.as_str());
    Ok(existing
        .iter()
        .any(|c| c.body.trim() == item.body.trim() && bot.is_none_or(|b| c.author == b)))
}

fn parse_iid(text: &str) -> Result<u64, GitlabError> {
    text.parse()
        .map_err(|_| GitlabError::Protocol("bad MR iid".into()))
}

/// The suffix of an MR note's target that makes it an internal note.
const INTERNAL: &str = " internal";

/// The outbox target of a reply on merge request `iid`: `"12"`, or `"12 internal"` for
/// an internal note (the answer to an internal note is never a public one).
pub fn mr_thread(iid: i64, internal: bool) -> String {
    if internal {
        format!("{iid}{INTERNAL}")
    } else {
        iid.to_string()
    }
}

/// The merge request and whether the note is internal, from [`mr_thread`]'s target.
fn mr_target(item: &OutboxItem) -> Result<(u64, bool), GitlabError> {
    match item.target.strip_suffix(INTERNAL) {
        Some(iid) => Ok((parse_iid(iid)?, true)),
        None => Ok((parse_iid(&item.target)?, false)),
    }
}

/// A commit status as stored in the outbox.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StatusBody {
    pub state: String,
    pub name: String,
    pub description: String,
    pub target_url: Option<String>,
}
