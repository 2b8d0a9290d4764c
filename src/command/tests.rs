//! Table tests for the `/deploy` parser: where a command is seen, and what it parses to.

use super::*;
use crate::events::{NoteAction, NoteAttributes, NoteMergeRequest, User, UserId};

const ENVS: &[&str] = &["staging", "production", "qa"];

type Parsed = Option<Result<Command, ParseError>>;

fn deploy(env: Option<&str>) -> Parsed {
    Some(Ok(Command::Deploy {
        env: env.map(String::from),
    }))
}

fn unknown(given: &str, suggestion: Option<&str>) -> Parsed {
    Some(Err(ParseError::UnknownEnv {
        given: given.to_string(),
        suggestion: suggestion.map(String::from),
    }))
}

fn extra(usage: &'static str, words: &[&str]) -> Parsed {
    Some(Err(ParseError::UnexpectedArgs {
        usage,
        extra: words.iter().map(|s| s.to_string()).collect(),
    }))
}

#[test]
fn parse_table() {
    let rows: Vec<(&str, &str, Parsed)> = vec![
        ("bare", "/deploy", deploy(None)),
        ("with env", "/deploy staging", deploy(Some("staging"))),
        (
            "trailing spaces",
            "/deploy staging   ",
            deploy(Some("staging")),
        ),
        (
            "tab between words",
            "/deploy\tstaging",
            deploy(Some("staging")),
        ),
        ("help", "/deploy help", Some(Ok(Command::Help))),
        ("doctor", "/deploy doctor", Some(Ok(Command::Doctor))),
        (
            "status",
            "/deploy status",
            Some(Ok(Command::Status { env: None })),
        ),
        (
            "status production",
            "/deploy status production",
            Some(Ok(Command::Status {
                env: Some("production".into()),
            })),
        ),
        (
            "status unknown env",
            "/deploy status prodution",
            unknown("prodution", Some("production")),
        ),
        ("no command", "LGTM, thanks!", None),
        ("empty note", "", None),
        ("not first word", "please /deploy staging", None),
        ("deployment is another word", "/deployment staging", None),
        ("punctuation glued on", "/deploy, staging", None),
        ("uppercase is not a quick action", "/Deploy staging", None),
        (
            "second line",
            "Looks good.\n/deploy staging",
            deploy(Some("staging")),
        ),
        (
            "first command wins",
            "/deploy qa\n/deploy staging",
            deploy(Some("qa")),
        ),
        (
            "first command wins even if bad",
            "/deploy stagign\n/deploy staging",
            unknown("stagign", Some("staging")),
        ),
        ("crlf", "hi\r\n/deploy staging\r\n", deploy(Some("staging"))),
        (
            "up to three leading spaces",
            "   /deploy staging",
            deploy(Some("staging")),
        ),
        ("four spaces is a code block", "    /deploy staging", None),
        ("tab is a code block", "\t/deploy staging", None),
        (
            "indented continuation of a paragraph",
            "text\n    /deploy qa",
            deploy(Some("qa")),
        ),
        ("backtick fence", "```\n/deploy staging\n```", None),
        ("tilde fence", "~~~sh\n/deploy staging\n~~~", None),
        (
            "after a closed fence",
            "```\n/deploy qa\n```\n/deploy staging",
            deploy(Some("staging")),
        ),
        (
            "longer fence needs longer close",
            "````\n```\n/deploy qa\n````\n/deploy staging",
            deploy(Some("staging")),
        ),
        (
            "unclosed fence hides the rest",
            "```\n/deploy staging",
            None,
        ),
        ("inline code at line start", "`/deploy staging`", None),
        (
            "inline code elsewhere",
            "run `/deploy staging` to deploy",
            None,
        ),
        (
            "code span over lines",
            "see `this\n/deploy staging` here",
            None,
        ),
        (
            "lone backtick is literal",
            "a ` b\n/deploy staging",
            deploy(Some("staging")),
        ),
        (
            "span ends at blank line",
            "a `b\n\n/deploy qa\nsee `c`",
            deploy(Some("qa")),
        ),
        ("quote", "> /deploy staging", None),
        ("quote without space", ">/deploy staging", None),
        (
            "quoted reply then command",
            "> /deploy qa\n\n/deploy staging",
            deploy(Some("staging")),
        ),
        ("multi-line quote block", ">>>\n/deploy staging\n>>>", None),
        (
            "after a quote block",
            ">>>\n/deploy qa\n>>>\n/deploy staging",
            deploy(Some("staging")),
        ),
        (
            "unicode around",
            "Ça marche 🚀\n/deploy staging",
            deploy(Some("staging")),
        ),
        (
            "non-breaking space separates words",
            "/deploy\u{a0}staging",
            deploy(Some("staging")),
        ),
        (
            "unicode env name unknown",
            "/deploy stägïng",
            unknown("stägïng", Some("staging")),
        ),
        (
            "typo did you mean",
            "/deploy stagign",
            unknown("stagign", Some("staging")),
        ),
        (
            "case differs",
            "/deploy Staging",
            unknown("Staging", Some("staging")),
        ),
        (
            "prefix suggests",
            "/deploy prod",
            unknown("prod", Some("production")),
        ),
        (
            "far off: no suggestion",
            "/deploy kubernetes",
            unknown("kubernetes", None),
        ),
        (
            "subcommand typo",
            "/deploy hepl",
            unknown("hepl", Some("help")),
        ),
        (
            "extra args",
            "/deploy staging now",
            extra("/deploy [ENV]", &["now"]),
        ),
        (
            "help with args",
            "/deploy help me",
            extra("/deploy help", &["me"]),
        ),
        (
            "status with two envs",
            "/deploy status qa staging",
            extra("/deploy status [ENV]", &["staging"]),
        ),
    ];
    let count = rows.len();
    for (name, note, expected) in rows {
        assert_eq!(parse(note, ENVS), expected, "row {name:?}: {note:?}");
    }
    assert!(count >= 20);
}

#[test]
fn help_is_generated_from_every_variant() {
    let help = help_text(&[
        ("staging", "manual: /deploy or hoist deploy"),
        ("production", "tag: release tags v*"),
    ]);
    for usage in [
        "`/deploy [ENV]`",
        "`/deploy status [ENV]`",
        "`/deploy help`",
        "`/deploy doctor`",
    ] {
        assert!(help.contains(usage), "{usage} missing from:\n{help}");
    }
    assert!(help.contains("- `staging`: manual"));
    // One entry per variant: adding a variant without a doc line fails to compile,
    // and every doc line is a usage in a code span followed by a description.
    assert_eq!(Command::DOCS.len(), 4);
    for doc in Command::DOCS {
        assert!(doc.trim().starts_with("`/deploy"), "{doc}");
    }
    for line in help.lines() {
        assert!(!line.starts_with('/'), "{line}");
    }
}

fn note(
    noteable: NoteableType,
    action: Option<NoteAction>,
    system: bool,
    author: u64,
) -> NoteEvent {
    NoteEvent {
        object_attributes: NoteAttributes {
            note: "/deploy".to_string(),
            noteable_type: noteable,
            action,
            system,
            ..NoteAttributes::default()
        },
        user: User {
            id: UserId(author),
            ..User::default()
        },
        merge_request: Some(NoteMergeRequest::default()),
        ..NoteEvent::default()
    }
}

#[test]
fn should_consider_table() {
    const BOT: u64 = 99;
    let mr = NoteableType::MergeRequest;
    let rows: Vec<(&str, NoteEvent, bool)> = vec![
        (
            "new MR note",
            note(mr.clone(), Some(NoteAction::Create), false, 1),
            true,
        ),
        (
            "no action: GitLab before 16.11",
            note(mr.clone(), None, false, 1),
            true,
        ),
        (
            "edited note",
            note(mr.clone(), Some(NoteAction::Update), false, 1),
            false,
        ),
        (
            "unknown action",
            note(
                mr.clone(),
                Some(NoteAction::Other("delete".into())),
                false,
                1,
            ),
            false,
        ),
        (
            "system note",
            note(mr.clone(), Some(NoteAction::Create), true, 1),
            false,
        ),
        (
            "hoist's own note",
            note(mr.clone(), Some(NoteAction::Create), false, BOT),
            false,
        ),
        (
            "commit note",
            note(NoteableType::Commit, None, false, 1),
            false,
        ),
        (
            "issue note",
            note(NoteableType::Issue, None, false, 1),
            false,
        ),
        (
            "MR note without its merge request",
            NoteEvent {
                merge_request: None,
                ..note(mr.clone(), None, false, 1)
            },
            false,
        ),
    ];
    for (name, event, expected) in rows {
        assert_eq!(should_consider(&event, BOT), expected, "row {name:?}");
    }
}

/// Hostile input for the parser (the proptest twin of `fuzz/fuzz_targets/command.rs`).
mod hostile {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any note parses without panicking; a deploy names a known environment or none.
        #[test]
        fn arbitrary_notes_never_panic(note in "(.{0,20}(\n|/deploy |```|> |`)){0,8}.{0,20}") {
            if let Some(Ok(Command::Deploy { env: Some(env) })) = parse(&note, ENVS) {
                prop_assert!(ENVS.contains(&env.as_str()), "{env}");
            }
        }

        /// A command inside a fenced block, inline code or a quote is never a command.
        #[test]
        fn quoted_or_fenced_commands_are_text(
            env in prop::sample::select(ENVS.to_vec()),
            before in "[a-z ]{0,20}",
            wrap in 0usize..3,
        ) {
            let note = match wrap {
                0 => format!("{before}\n```\n/deploy {env}\n```\n"),
                1 => format!("{before} `/deploy {env}`"),
                _ => format!("{before}\n> /deploy {env}\n"),
            };
            prop_assert_eq!(parse(&note, ENVS), None, "{}", note);
        }

        /// A command on its own line is found whatever text surrounds it.
        #[test]
        fn a_command_line_is_found_among_text(
            env in prop::sample::select(ENVS.to_vec()),
            before in "([a-z ]{0,20}\n){0,3}",
            after in "(\n[a-z ]{0,20}){0,3}",
        ) {
            let note = format!("{before}/deploy {env}{after}");
            prop_assert_eq!(parse(&note, ENVS), deploy(Some(env)), "{}", note);
        }
    }
}
