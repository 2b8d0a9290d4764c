//! GitLab timestamps: several text formats across payloads and versions, parsed leniently and never fatal.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A timestamp as GitLab sent it, with its UTC instant when the text could be understood.
///
/// GitLab mixes `2016-08-12 15:23:28 UTC` (older hooks), `2021-04-28 21:50:00 +0200`
/// (job hooks) and RFC 3339 (newer hooks, the REST API). A timestamp hoist cannot read
/// must not cost the event, so parsing never fails: the text is kept and [`Self::utc`]
/// answers `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timestamp {
    raw: String,
    utc: Option<DateTime<Utc>>,
}

/// Formats with an explicit offset, tried in order (`%.f` also matches no fraction).
const OFFSET_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f %z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f %z",
];

/// Formats whose zone is spelled `UTC` (Ruby's `Time#to_s`). Text without any zone is
/// not guessed at: the instance's zone is unknown here, and a wrong instant is worse than none.
const UTC_FORMATS: &[&str] = &["%Y-%m-%d %H:%M:%S%.f UTC", "%Y-%m-%dT%H:%M:%S%.f UTC"];

impl Timestamp {
    /// Reads `raw` leniently; never fails.
    pub fn parse(raw: &str) -> Self {
        Self {
            raw: raw.to_owned(),
            utc: parse_utc(raw.trim()),
        }
    }

    /// The text exactly as GitLab sent it (numbers are kept in decimal).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The instant in UTC, or `None` when the text is in no format hoist knows.
    pub fn utc(&self) -> Option<DateTime<Utc>> {
        self.utc
    }
}

fn parse_utc(text: &str) -> Option<DateTime<Utc>> {
    if text.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in OFFSET_FORMATS {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in UTC_FORMATS {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    None
}

fn from_unix_seconds(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl From<&str> for Timestamp {
    fn from(raw: &str) -> Self {
        Self::parse(raw)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TimestampVisitor)
    }
}

/// Accepts any JSON value so that a timestamp of the wrong type does not fail the whole event:
/// strings are parsed, integers are Unix seconds, anything else is kept as unreadable.
struct TimestampVisitor;

impl TimestampVisitor {
    fn unreadable() -> Timestamp {
        Timestamp {
            raw: String::new(),
            utc: None,
        }
    }
}

impl<'de> Visitor<'de> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a timestamp")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
        Ok(Timestamp::parse(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
        Ok(Timestamp {
            raw: v.to_string(),
            utc: from_unix_seconds(v),
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
        Ok(Timestamp {
            raw: v.to_string(),
            utc: i64::try_from(v).ok().and_then(from_unix_seconds),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
        Ok(Timestamp {
            raw: v.to_string(),
            utc: None,
        })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Timestamp, E> {
        Ok(Self::unreadable())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Timestamp, E> {
        Ok(Self::unreadable())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Timestamp, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::unreadable())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Timestamp, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::unreadable())
    }
}
