//! The string vocabularies of GitLab payloads (job and pipeline status, note action, noteable type),
//! each with an `Other` fallback so a value GitLab adds later never fails an event.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

macro_rules! string_enum {
    (
        $(#[$doc:meta])*
        $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A value hoist does not know (kept verbatim; empty when GitLab sent none).
            Other(String),
        }

        impl $name {
            /// The value as GitLab spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(s) => s,
                }
            }

            /// Maps GitLab's spelling onto a variant; unknown spellings become `Other`.
            pub fn from_gitlab(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::Other(String::new())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " string"))
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        Ok($name::from_gitlab(v))
                    }
                    fn visit_unit<E: de::Error>(self) -> Result<$name, E> {
                        Ok($name::default())
                    }
                }
                deserializer.deserialize_any(V)
            }
        }
    };
}

string_enum!(
    /// The status of a pipeline or a job, shared by pipeline, job and REST payloads.
    Status {
        Created = "created",
        WaitingForResource = "waiting_for_resource",
        Preparing = "preparing",
        Pending = "pending",
        Running = "running",
        Success = "success",
        Failed = "failed",
        Canceling = "canceling",
        Canceled = "canceled",
        Skipped = "skipped",
        /// A job waiting to be played; a pipeline blocked on such a job.
        Manual = "manual",
        /// A delayed job counting down.
        Scheduled = "scheduled",
    }
);

impl Status {
    /// Whether the status can no longer change without someone retrying or playing the job.
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            Self::Success | Self::Failed | Self::Canceled | Self::Skipped
        )
    }
}

string_enum!(
    /// What happened to a note (`object_attributes.action`, GitLab 16.11+).
    NoteAction {
        Create = "create",
        /// An edit: it fires the hook again, and must never trigger anything.
        Update = "update",
    }
);

string_enum!(
    /// What a note is attached to (`object_attributes.noteable_type`).
    NoteableType {
        MergeRequest = "MergeRequest",
        Commit = "Commit",
        Issue = "Issue",
        Snippet = "Snippet",
    }
);
