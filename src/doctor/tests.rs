//! The pure parts of the checks: line rendering, hook events, protected tag rules.

use super::*;
use crate::events::UserId;
use crate::gitlab::{HookId, ProtectedTag};

fn hook(pipeline: bool, tag_push: bool, note: bool, job: bool) -> Hook {
    Hook {
        id: HookId(3),
        url: "https://hoist.example.com/hooks/gitlab".into(),
        events: crate::gitlab::HookEvents {
            pipeline,
            tag_push,
            note,
            confidential_note: note,
            job,
        },
        enable_ssl_verification: true,
        alert_status: Some("executable".into()),
        disabled_until: None,
    }
}

#[test]
fn missing_events_names_each_event_hoist_needs() {
    assert!(missing_events(&hook(true, true, true, true)).is_empty());
    assert_eq!(
        missing_events(&hook(true, false, true, false)),
        ["tag push", "job"]
    );
    assert_eq!(
        missing_events(&hook(false, false, false, false)),
        ["pipeline", "tag push", "note", "internal note", "job"]
    );
}

#[test]
fn protected_tag_rules_allow_by_level_or_by_user() {
    let maintainers = ProtectedTag {
        name: "v*".into(),
        create_levels: vec![40],
        create_users: vec![],
    };
    assert!(maintainers.allows(UserId(1), 40));
    assert!(maintainers.allows(UserId(1), 50));
    assert!(!maintainers.allows(UserId(1), 30));
    let no_one = ProtectedTag {
        name: "v*".into(),
        create_levels: vec![0],
        create_users: vec![UserId(7)],
    };
    assert!(!no_one.allows(UserId(1), 50), "level 0 is no one");
    assert!(no_one.allows(UserId(7), 10), "named users may");
}

#[test]
fn lines_say_verdict_name_detail_and_fix() {
    let checks = vec![
        Check::ok("docker", "unix:///run/docker.sock: swarm active, a manager"),
        Check::fail(
            "hook acme/shop",
            "no hook calls X",
            "run hoist hook install --project acme/shop",
        ),
        Check::bad(
            Verdict::Warn,
            "gitlab token",
            "cannot read scopes",
            "use api",
        ),
    ];
    assert_eq!(
        render_lines(&checks),
        "ok   docker: unix:///run/docker.sock: swarm active, a manager\n\
         FAIL hook acme/shop: no hook calls X\n     fix: run hoist hook install --project acme/shop\n\
         warn gitlab token: cannot read scopes\n     fix: use api\n"
    );
    assert!(any_failed(&checks));
    assert!(!any_failed(&checks[..1]));
    assert!(!any_failed(&checks[2..]), "a warning is not a failure");
}
