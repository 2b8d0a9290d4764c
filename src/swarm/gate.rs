//! The platform gate: the index must hold every listed platform and every node that may run the service.
//!
//! The second half is what fails late, as "no suitable node", on mixed Pi
//! clusters: a ready node that the placement constraints allow, whose
//! `os/arch[/variant]` the index lacks. Constraints are evaluated like Swarm does
//! (`==`/`!=`, case-insensitive) for the keys Swarm knows.

use std::fmt;

use super::NodeInfo;
use crate::config::Platform;
use crate::registry::{missing_platforms, platform_matches};

/// A node that may run the service but finds no image for its platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGap {
    pub hostname: String,
    pub node_id: String,
    pub platform: Platform,
}

/// Why an image may not be deployed: exactly what is missing and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateFailure {
    /// `repository:tag`.
    pub image: String,
    /// What the index holds.
    pub available: Vec<Platform>,
    /// Entries of the service's `platforms` the index lacks.
    pub missing_required: Vec<Platform>,
    /// Ready nodes allowed by the constraints whose platform the index lacks.
    pub nodes: Vec<NodeGap>,
}

impl fmt::Display for GateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |ps: &[Platform]| {
            ps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(f, "image {} ", self.image)?;
        let mut parts = Vec::new();
        if !self.missing_required.is_empty() {
            parts.push(format!(
                "lacks required platform(s) {}",
                list(&self.missing_required)
            ));
        }
        for gap in &self.nodes {
            parts.push(format!(
                "has no {} image for node {} ({}), which the placement constraints allow",
                gap.platform, gap.hostname, gap.node_id
            ));
        }
        write!(f, "{}", parts.join("; "))?;
        let available = if self.available.is_empty() {
            "nothing".to_string()
        } else {
            list(&self.available)
        };
        write!(f, " (the index holds {available})")
    }
}

impl std::error::Error for GateFailure {}

/// Checks the required platforms and, when `nodes` is given, every ready, schedulable node
/// the `constraints` allow.
pub fn check_platforms(
    image: &str,
    available: &[Platform],
    required: &[Platform],
    nodes: Option<(&[NodeInfo], &[String])>,
) -> Result<(), GateFailure> {
    let missing_required = missing_platforms(available, required);
    let mut gaps = Vec::new();
    if let Some((nodes, constraints)) = nodes {
        for node in nodes {
            let eligible =
                node.ready && node.availability != "drain" && node_allowed(node, constraints);
            if eligible
                && !available
                    .iter()
                    .any(|have| platform_matches(have, &node.platform))
            {
                gaps.push(NodeGap {
                    hostname: node.hostname.clone(),
                    node_id: node.id.clone(),
                    platform: node.platform.clone(),
                });
            }
        }
    }
    if missing_required.is_empty() && gaps.is_empty() {
        Ok(())
    } else {
        Err(GateFailure {
            image: image.to_string(),
            available: available.to_vec(),
            missing_required,
            nodes: gaps,
        })
    }
}

/// Whether Swarm's placement `constraints` allow `node`. A constraint on a key hoist does not
/// know counts as satisfied, so the gate checks more nodes rather than fewer.
pub fn node_allowed(node: &NodeInfo, constraints: &[String]) -> bool {
    constraints.iter().all(|c| constraint_allows(node, c))
}

fn constraint_allows(node: &NodeInfo, constraint: &str) -> bool {
    let (key, expected, equal) = if let Some((k, v)) = constraint.split_once("!=") {
        (k, v, false)
    } else if let Some((k, v)) = constraint.split_once("==") {
        (k, v, true)
    } else {
        return true;
    };
    let key = key.trim();
    let expected = expected.trim();
    let actual: Option<String> = match key.to_ascii_lowercase().as_str() {
        "node.id" => Some(node.id.clone()),
        "node.hostname" => Some(node.hostname.clone()),
        "node.role" => Some(node.role.clone()),
        "node.platform.os" => Some(node.platform.os.clone()),
        "node.platform.arch" => Some(node.raw_arch.clone()),
        _ => {
            if let Some(label) = key.strip_prefix("node.labels.") {
                node.labels.get(label).cloned()
            } else if let Some(label) = key.strip_prefix("engine.labels.") {
                node.engine_labels.get(label).cloned()
            } else {
                return true;
            }
        }
    };
    let matches = actual.is_some_and(|a| a.eq_ignore_ascii_case(expected));
    if equal { matches } else { !matches }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn p(text: &str) -> Platform {
        Platform::parse(text).expect("platform")
    }

    fn node(host: &str, arch: &str, role: &str, labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            id: format!("id-{host}"),
            hostname: host.into(),
            role: role.into(),
            ready: true,
            availability: "active".into(),
            platform: crate::registry::normalize_platform(&Platform {
                os: "linux".into(),
                arch: arch.into(),
                variant: None,
            }),
            raw_arch: arch.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            engine_labels: HashMap::new(),
        }
    }

    #[test]
    fn constraints_follow_swarm_semantics() {
        let n = node("pi1", "armv7l", "worker", &[("zone", "Attic")]);
        let cases: &[(&[&str], bool)] = &[
            (&[], true),
            (&["node.role==worker"], true),
            (&["node.role == manager"], false),
            (&["node.role!=manager"], true),
            (&["node.labels.zone==attic"], true),
            (&["node.labels.zone!=attic"], false),
            (&["node.labels.missing==x"], false),
            (&["node.labels.missing!=x"], true),
            (&["node.platform.arch==armv7l", "node.hostname==pi1"], true),
            (&["node.platform.arch==aarch64"], false),
            (&["node.unknown==x"], true),
        ];
        for (constraints, want) in cases {
            let cs: Vec<String> = constraints.iter().map(|s| s.to_string()).collect();
            assert_eq!(node_allowed(&n, &cs), *want, "{constraints:?}");
        }
    }

    #[test]
    fn gate_lists_missing_platforms_and_nodes() {
        let available = [p("linux/amd64"), p("linux/arm64")];
        let nodes = [
            node("x86", "x86_64", "manager", &[]),
            node("pi3", "armv7l", "worker", &[]),
            node("pi4", "aarch64", "worker", &[]),
        ];
        let err = check_platforms(
            "r/app:1",
            &available,
            &[p("linux/arm/v7"), p("linux/arm64")],
            Some((&nodes, &[])),
        )
        .expect_err("arm/v7 is missing");
        assert_eq!(err.missing_required, vec![p("linux/arm/v7")]);
        assert_eq!(err.nodes.len(), 1);
        assert_eq!(err.nodes[0].hostname, "pi3");
        let text = err.to_string();
        assert!(
            text.contains("linux/arm/v7") && text.contains("pi3"),
            "{text}"
        );

        // Constraints that keep the service off the Pi 3 make the node gap go away.
        let only_managers = ["node.role==manager".to_string()];
        assert!(
            check_platforms("r/app:1", &available, &[], Some((&nodes, &only_managers))).is_ok()
        );
    }

    #[test]
    fn down_and_drained_nodes_do_not_count() {
        let mut down = node("pi3", "armv7l", "worker", &[]);
        down.ready = false;
        let mut drained = node("pi2", "armv7l", "worker", &[]);
        drained.availability = "drain".into();
        assert!(
            check_platforms(
                "r/app:1",
                &[p("linux/amd64")],
                &[],
                Some((&[down, drained], &[]))
            )
            .is_ok()
        );
    }
}
