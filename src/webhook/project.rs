//! The one thing the receiver reads from a body: which project it is about.
//!
//! GitLab puts `project` (or `project_id`) near the top of every hook, before the
//! bulky parts (`commits`, `builds`). The scan reads the top-level object only up to
//! the project's path and leaves the rest of the body to the worker, which parses it
//! in full anyway. A body that is not a JSON object up to that point is refused (400).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Where the project is named.
#[derive(Deserialize, Default, Debug, PartialEq)]
pub(super) struct ProjectRef {
    #[serde(default)]
    project: Option<ProjectObject>,
    #[serde(default, deserialize_with = "lenient_id")]
    project_id: Option<u64>,
}

#[derive(Deserialize, Default, Debug, PartialEq)]
struct ProjectObject {
    #[serde(default, deserialize_with = "lenient_id")]
    id: Option<u64>,
    #[serde(default)]
    path_with_namespace: Option<String>,
}

impl ProjectRef {
    pub(super) fn id(&self) -> Option<u64> {
        self.project.as_ref().and_then(|p| p.id).or(self.project_id)
    }

    pub(super) fn path(&self) -> Option<&str> {
        self.project
            .as_ref()
            .and_then(|p| p.path_with_namespace.as_deref())
    }

    /// Reads `body`'s top-level object until the project's path is known (or to its end).
    pub(super) fn scan(body: &[u8]) -> Result<ProjectRef, serde_json::Error> {
        let mut found = ProjectRef::default();
        let mut done = false;
        let mut de = serde_json::Deserializer::from_slice(body);
        let seed = Scan {
            out: &mut found,
            done: &mut done,
        };
        match seed.deserialize(&mut de) {
            Ok(()) => de.end().map(|()| found),
            // The visitor stopped on purpose: the rest is the worker's.
            Err(_) if done => Ok(found),
            Err(e) => Err(e),
        }
    }
}

/// Accepts an id as a number or a numeric string; anything else counts as absent.
fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    })
}

struct LenientId;

impl<'de> DeserializeSeed<'de> for LenientId {
    type Value = Option<u64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        lenient_id(d)
    }
}

struct Scan<'a> {
    out: &'a mut ProjectRef,
    done: &'a mut bool,
}

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "project" => {
                    self.out.project = map.next_value::<Option<ProjectObject>>()?;
                    if self.out.path().is_some() {
                        // All the receiver needs: stop reading here.
                        *self.done = true;
                        return Err(de::Error::custom("project found"));
                    }
                }
                "project_id" => self.out.project_id = map.next_value_seed(LenientId)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full(body: &[u8]) -> Option<ProjectRef> {
        serde_json::from_slice::<ProjectRef>(body).ok()
    }

    #[test]
    fn stops_at_the_project_and_finds_ids_and_paths() {
        let body = br#"{"object_kind":"pipeline","project":{"id":7,"path_with_namespace":"acme/shop"},"builds":[1,2,3]}"#;
        let found = ProjectRef::scan(body).expect("scan");
        assert_eq!((found.id(), found.path()), (Some(7), Some("acme/shop")));

        // What follows the project is not read: a truncated tail is the worker's problem.
        let truncated = br#"{"project":{"path_with_namespace":"acme/shop"},"builds":[{"id":"#;
        assert_eq!(
            ProjectRef::scan(truncated).expect("scan").path(),
            Some("acme/shop")
        );

        // A Job hook names only project_id (a number or a numeric string).
        let job = br#"{"object_kind":"build","project_id":"42","build_id":1}"#;
        assert_eq!(ProjectRef::scan(job).expect("scan").id(), Some(42));
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        for body in [&b"not json"[..], b"[1,2]", b"\"text\"", b"{\"a\":", b""] {
            assert!(
                ProjectRef::scan(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // A whole object without a project is read to its end, trailing text included.
        assert!(ProjectRef::scan(br#"{"a":1} trailing"#).is_err());
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<u32>().prop_map(serde_json::Value::from),
            "[a-z/]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Wherever the project is and whatever surrounds it, the scan finds what a full
        /// parse finds.
        #[test]
        fn agrees_with_a_full_parse(
            before in prop::collection::btree_map("[a-z_]{1,6}", json_value(), 0..4),
            after in prop::collection::btree_map("[a-z_]{1,6}", json_value(), 0..4),
            id in prop::option::of(any::<u32>()),
            path in prop::option::of("[a-z]{1,5}/[a-z]{1,5}"),
            project_id in prop::option::of(any::<u32>()),
        ) {
            let mut text = String::from("{");
            let mut fields: Vec<String> = before
                .iter()
                .filter(|(k, _)| !k.starts_with("project"))
                .map(|(k, v)| format!("{k:?}:{v}"))
                .collect();
            let mut project = serde_json::Map::new();
            if let Some(id) = id { project.insert("id".into(), id.into()); }
            if let Some(p) = &path { project.insert("path_with_namespace".into(), p.clone().into()); }
            fields.push(format!("\"project\":{}", serde_json::Value::Object(project)));
            if let Some(pid) = project_id { fields.push(format!("\"project_id\":{pid}")); }
            fields.extend(after.iter().filter(|(k, _)| !k.starts_with("project")).map(|(k, v)| format!("{k:?}:{v}")));
            text.push_str(&fields.join(","));
            text.push('}');
            let scanned = ProjectRef::scan(text.as_bytes()).expect("a valid object scans");
            let whole = full(text.as_bytes()).expect("a valid object parses");
            prop_assert_eq!(scanned.path(), whole.path());
            // After a found path nothing is read, so a later `project_id` is unseen; the id
            // only matters without a path, or when the project object carries it.
            if path.is_none() || id.is_some() {
                prop_assert_eq!(scanned.id(), whole.id());
            }
        }

        #[test]
        fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = ProjectRef::scan(&body);
        }
    }
}
