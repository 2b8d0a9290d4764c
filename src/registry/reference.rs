//! Splitting a repository name into the registry host and the path inside it, by Docker's rules.

use super::RegistryError;

/// A repository such as `registry.example.com/group/app` or `alpine` (Docker Hub).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// The registry host as people write it (`docker.io` for Docker Hub).
    pub registry: String,
    /// The path inside the registry (`group/app`, `library/alpine`).
    pub path: String,
}

impl Repository {
    /// Parses a repository without tag or digest. The first component is a registry
    /// host when it has a `.` or `:` or is `localhost`, as the docker CLI decides.
    pub fn parse(image: &str) -> Result<Repository, RegistryError> {
        let bad = |reason: &str| RegistryError::BadReference {
            image: image.to_string(),
            reason: reason.to_string(),
        };
        if image.is_empty() {
            return Err(bad("empty"));
        }
        if image.contains('@') {
            return Err(bad("a repository carries no digest"));
        }
        let (registry, path) = match image.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), image.to_string()),
        };
        let path = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
        if path.is_empty() || !path.chars().all(valid) || path.split('/').any(str::is_empty) {
            return Err(bad(
                "the path must be lowercase letters, digits, '.', '_', '-' and '/'",
            ));
        }
        Ok(Repository { registry, path })
    }

    /// The host to send API requests to (Docker Hub's API lives elsewhere than its name).
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }
}
