//! The `/deploy` command: finding it in a merge request note, parsing it, and the help generated from it.
//!
//! A command is `/deploy` as the first word of a line that Markdown would render
//! as text: not inside a fenced code block (```` ``` ```` or `~~~`), an indented
//! code block (4 spaces or a tab), an inline code span (also one spanning lines),
//! a `>` quote or a `>>>` quote block. The first command in a note wins. Like
//! GitLab's quick actions, `/deploy` is lowercase only; environment names match
//! exactly, and a near miss gets a did-you-mean.

mod markdown;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::events::{NoteEvent, NoteableType};

macro_rules! commands {
    ($(
        #[doc = $doc:literal]
        $variant:ident $({ $($field:ident : $ty:ty),* $(,)? })?,
    )*) => {
        /// A parsed `/deploy` command.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Command {
            $(#[doc = $doc] $variant $({ $($field: $ty),* })?,)*
        }

        impl Command {
            /// Each variant's doc line, `` `usage`: what it does``, in declaration order:
            /// the help text is generated from these, so it cannot drift from the enum.
            pub const DOCS: &'static [&'static str] = &[$($doc),*];
        }
    };
}

commands! {
    /// `/deploy [ENV]`: deploys this merge request's head commit to ENV (default: the project's only manual environment).
    Deploy { env: Option<String> },
    /// `/deploy status [ENV]`: shows what runs in ENV now and its last runs.
    Status { env: Option<String> },
    /// `/deploy help`: lists these commands and this project's environments.
    Help,
    /// `/deploy doctor`: checks this project's setup.
    Doctor,
}

/// The word that starts a command.
pub const TRIGGER: &str = "/deploy";

const SUBCOMMANDS: &[&str] = &["help", "status", "doctor"];

/// A `/deploy` that hoist cannot act on: the user's mistake, answered with a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The environment is not configured; `suggestion` is the closest name, if one is close.
    UnknownEnv {
        given: String,
        suggestion: Option<String>,
    },
    /// Words after a complete command.
    UnexpectedArgs {
        /// The command's usage (`/deploy help`).
        usage: &'static str,
        extra: Vec<String>,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownEnv { given, suggestion } => {
                write!(f, "unknown environment {given:?}")?;
                match suggestion {
                    Some(s) => write!(f, "; did you mean {s:?}?"),
                    None => Ok(()),
                }
            }
            Self::UnexpectedArgs { usage, extra } => {
                write!(f, "unexpected {:?} after {usage}", extra.join(" "))
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Finds and parses the first `/deploy` command of `note`.
///
/// `None`: the note holds no command (it is not for hoist). `Some(Err)`: it
/// does, but hoist cannot act on it, and the author gets a reply saying why.
pub fn parse(note: &str, known_envs: &[&str]) -> Option<Result<Command, ParseError>> {
    let args = markdown::command_lines(note).find_map(command_args)?;
    Some(parse_args(&args, known_envs))
}

/// The words after `/deploy` when `line` (already known to be rendered text) starts a command.
fn command_args(line: &str) -> Option<Vec<&str>> {
    let mut words = line.split_whitespace();
    (words.next()? == TRIGGER).then(|| words.collect())
}

fn parse_args(args: &[&str], known_envs: &[&str]) -> Result<Command, ParseError> {
    let too_many = |usage: &'static str, extra: &[&str]| ParseError::UnexpectedArgs {
        usage,
        extra: extra.iter().map(|s| s.to_string()).collect(),
    };
    match args {
        [] => Ok(Command::Deploy { env: None }),
        ["help"] => Ok(Command::Help),
        ["help", extra @ ..] => Err(too_many("/deploy help", extra)),
        ["doctor"] => Ok(Command::Doctor),
        ["doctor", extra @ ..] => Err(too_many("/deploy doctor", extra)),
        ["status"] => Ok(Command::Status { env: None }),
        ["status", env] => Ok(Command::Status {
            env: Some(known_env(env, known_envs)?),
        }),
        ["status", _, extra @ ..] => Err(too_many("/deploy status [ENV]", extra)),
        [env] => Ok(Command::Deploy {
            env: Some(known_env(env, known_envs)?),
        }),
        [_, extra @ ..] => Err(too_many("/deploy [ENV]", extra)),
    }
}

fn known_env(given: &str, known_envs: &[&str]) -> Result<String, ParseError> {
    if known_envs.contains(&given) {
        return Ok(given.to_string());
    }
    Err(ParseError::UnknownEnv {
        given: given.to_string(),
        suggestion: suggest(given, known_envs),
    })
}

/// The closest environment (or subcommand) name: same letters in another case,
/// a prefix (`prod`), or within a small edit distance (`stagign`).
fn suggest(given: &str, known_envs: &[&str]) -> Option<String> {
    let lower = given.to_lowercase();
    let candidates = known_envs.iter().chain(SUBCOMMANDS).copied();
    if let Some(same) = candidates.clone().find(|c| c.to_lowercase() == lower) {
        return Some(same.to_string());
    }
    let limit = (lower.chars().count() / 3).max(2);
    let best = candidates
        .clone()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    best.or_else(|| {
        (lower.chars().count() >= 3)
            .then(|| {
                known_envs
                    .iter()
                    .find(|c| c.to_lowercase().starts_with(&lower))
            })
            .flatten()
            .copied()
    })
    .map(str::to_string)
}

/// The commands, one Markdown list item each (`` - `/deploy help`: … ``), from [`Command::DOCS`].
pub fn command_list() -> String {
    let mut out = String::new();
    for doc in Command::DOCS {
        out.push_str("- ");
        out.push_str(doc.trim());
        out.push('\n');
    }
    out
}

/// The help: the commands, then the project's environments with a description
/// of their policy (`("staging", "manual: /deploy, hoist deploy, or playing the deploy job")`).
pub fn help_text(envs: &[(&str, &str)]) -> String {
    let mut out = String::from("Commands (write them at the start of a line):\n\n");
    out.push_str(&command_list());
    out.push_str("\nEnvironments:\n\n");
    if envs.is_empty() {
        out.push_str("- none are configured for this project\n");
    }
    for (name, policy) in envs {
        out.push_str(&format!(
            "- `{}`: {}\n",
            crate::report::code_safe(name),
            crate::report::one_line(policy)
        ));
    }
    out
}

/// Whether a note hook may carry a command for hoist: a new (not edited), non-system
/// note on a merge request, written by someone other than hoist itself.
pub fn should_consider(note: &NoteEvent, bot_user_id: u64) -> bool {
    let attrs = &note.object_attributes;
    attrs.noteable_type == NoteableType::MergeRequest
        && note.merge_request.is_some()
        && !note.is_edit()
        && !attrs.system
        && note.user.id.get() != bot_user_id
}
