//! Registry access: resolve `image:tag` to the digest of its image index and the platforms it holds.
//!
//! The run engine's `verify` step calls [`ImageRegistry::resolve`]; the digest it
//! returns is what Swarm gets pinned to (`image:tag@sha256:…`), so every node
//! pulls its own architecture from the same index. [`RegistryClient`] is the real
//! implementation (Docker Registry HTTP API v2 with anonymous, basic and Bearer
//! token auth); tests may put a world model behind the trait.

mod client;
mod reference;

use std::fmt;
use std::future::Future;

pub use client::RegistryClient;
pub use reference::Repository;

use crate::config::Platform;

/// A content digest, `sha256:` + 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

impl Digest {
    /// Accepts only `sha256:<64 hex>`: the one algorithm registries and Swarm pin with.
    pub fn parse(text: &str) -> Result<Digest, String> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("{text:?} is not a sha256 digest"))?;
        if hex.len() != 64
            || !hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            return Err(format!("{text:?} is not a sha256 digest"));
        }
        Ok(Digest(text.to_string()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `sha256:` + the first 12 hex digits, the form shown to people (SPEC §3).
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(19)]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a tag points at, as the registry reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The repository as configured (`registry.example.com/group/app`).
    pub repository: String,
    pub tag: String,
    /// Digest of the manifest the tag points at: the index when there is one.
    pub digest: Digest,
    /// Media type of that manifest.
    pub media_type: String,
    /// True for an OCI index or Docker manifest list, false for a single-platform manifest.
    pub is_index: bool,
    /// Platforms the image can run on (attestation entries `unknown/unknown` left out).
    pub platforms: Vec<Platform>,
}

impl ResolvedImage {
    /// `repository:tag`, for messages.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// The pinned reference Swarm gets: `repository:tag@sha256:…`.
    pub fn pinned(&self) -> String {
        format!("{}:{}@{}", self.repository, self.tag, self.digest)
    }
}

/// Registry credentials for one host, as sent to the registry and to Docker.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Registry host as configured (`127.0.0.1:5000`).
    pub server: String,
    pub username: String,
    pub password: crate::config::Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a tag could not be resolved. Every message names the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("{image} is not a valid image reference: {reason}")]
    BadReference { image: String, reason: String },
    #[error("{image} not found in registry {registry}: {detail}")]
    NotFound {
        image: String,
        registry: String,
        detail: String,
    },
    #[error("registry {registry} refused access to {image}: {detail}")]
    AuthRefused {
        image: String,
        registry: String,
        detail: String,
    },
    #[error("registry {registry} is unreachable for {image}: {detail}")]
    Unreachable {
        image: String,
        registry: String,
        detail: String,
    },
    #[error("registry {registry} gave an unusable answer for {image}: {detail}")]
    Invalid {
        image: String,
        registry: String,
        detail: String,
    },
}

impl RegistryError {
    /// Worth retrying later (the registry was down or overloaded), as opposed to a definite answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unreachable { .. })
    }
}

/// The registry as the run engine sees it.
pub trait ImageRegistry: Send + Sync {
    /// Resolves `repository:tag` to the digest of its index (or single manifest) and its platforms.
    fn resolve(
        &self,
        repository: &str,
        tag: &str,
    ) -> impl Future<Output = Result<ResolvedImage, RegistryError>> + Send;

    /// The credentials configured for the registry holding `repository`, to hand to Docker.
    fn credentials_for(&self, repository: &str) -> Option<Credentials>;
}

/// A platform in the canonical spelling registries use: `linux/amd64`, `linux/arm64`, `linux/arm/v7`.
///
/// Nodes report `x86_64`/`aarch64`/`armv7l`; indexes may write `arm64/v8`. Both are mapped here.
pub fn normalize_platform(p: &Platform) -> Platform {
    let os = p.os.to_ascii_lowercase();
    let arch = p.arch.to_ascii_lowercase();
    let (arch, implied_variant) = match arch.as_str() {
        "x86_64" | "x86-64" => ("amd64".to_string(), None),
        "aarch64" => ("arm64".to_string(), None),
        "armv7l" | "armv7" | "armhf" => ("arm".to_string(), Some("v7")),
        "armv6l" | "armv6" | "armel" => ("arm".to_string(), Some("v6")),
        "i386" | "i686" => ("386".to_string(), None),
        _ => (arch, None),
    };
    let variant = p
        .variant
        .as_deref()
        .map(str::to_ascii_lowercase)
        .or(implied_variant.map(str::to_string))
        .filter(|v| !v.is_empty())
        // arm64 has only v8 in practice; writing it or not means the same image.
        .filter(|v| !(arch == "arm64" && v == "v8"));
    Platform { os, arch, variant }
}

/// Whether an image built for `have` runs where `want` is needed.
///
/// A missing variant on either side matches any variant of the same os/arch (an
/// `arm` entry without variant is taken as the common one, like containerd does).
pub fn platform_matches(have: &Platform, want: &Platform) -> bool {
    let have = normalize_platform(have);
    let want = normalize_platform(want);
    have.os == want.os
        && have.arch == want.arch
        && match (&have.variant, &want.variant) {
            (Some(h), Some(w)) => h == w,
            _ => true,
        }
}

/// The entries of `required` that no platform in `available` satisfies.
pub fn missing_platforms(available: &[Platform], required: &[Platform]) -> Vec<Platform> {
    required
        .iter()
        .filter(|want| !available.iter().any(|have| platform_matches(have, want)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
