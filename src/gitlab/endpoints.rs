//! Endpoints the `gitlab` crate lacks or gets wrong for us: project hooks with `signing_token`.

use gitlab::api::common::NameOrId;
use gitlab::api::endpoint_prelude::*;

use super::HookSpec;

/// `POST /projects/:id/hooks` (no `hook`) or `PUT /projects/:id/hooks/:hook_id`, sending
/// `signing_token` (GitLab 19.0+, absent from the crate's `CreateHook`/`EditHook`).
pub struct HookEndpoint<'a> {
    pub project: NameOrId<'a>,
    pub hook: Option<u64>,
    pub spec: &'a HookSpec,
}

impl Endpoint for HookEndpoint<'_> {
    fn method(&self) -> Method {
        match self.hook {
            Some(_) => Method::PUT,
            None => Method::POST,
        }
    }

    fn endpoint(&self) -> Cow<'static, str> {
        match self.hook {
            Some(id) => format!("projects/{}/hooks/{id}", self.project).into(),
            None => format!("projects/{}/hooks", self.project).into(),
        }
    }

    fn body(&self) -> Result<Option<(&'static str, Vec<u8>)>, BodyError> {
        let s = self.spec;
        let mut body = serde_json::json!({
            "url": s.url,
            "pipeline_events": s.events.pipeline,
            "tag_push_events": s.events.tag_push,
            "note_events": s.events.note,
            "confidential_note_events": s.events.confidential_note,
            "job_events": s.events.job,
            "push_events": false,
            "enable_ssl_verification": s.enable_ssl_verification,
            // Always sent: an edit that changes the URL resets it on GitLab's side.
            "token": s.token.as_ref().map(|t| t.expose()).unwrap_or(""),
        });
        if let (Some(signing), Some(obj)) = (&s.signing_token, body.as_object_mut()) {
            obj.insert("signing_token".into(), signing.expose().into());
        }
        Ok(Some(("application/json", serde_json::to_vec(&body)?)))
    }
}
