//! Registry unit tests: platform rules, reference parsing, and the Bearer token flow against a fake registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::client::parse_challenge_for_test;
use super::*;
use crate::config::{RegistryConfig, Secret};

fn p(text: &str) -> Platform {
    Platform::parse(text).expect("platform")
}

#[test]
fn platforms_normalise_node_and_index_spellings() {
    let cases = [
        ("linux", "x86_64", None, "linux/amd64"),
        ("linux", "aarch64", None, "linux/arm64"),
        ("linux", "arm64", Some("v8"), "linux/arm64"),
        ("linux", "armv7l", None, "linux/arm/v7"),
        ("linux", "arm", Some("v7"), "linux/arm/v7"),
        ("Linux", "AMD64", None, "linux/amd64"),
    ];
    for (os, arch, variant, want) in cases {
        let got = normalize_platform(&Platform {
            os: os.into(),
            arch: arch.into(),
            variant: variant.map(Into::into),
        });
        assert_eq!(got.to_string(), want, "{os}/{arch}/{variant:?}");
    }
}

#[test]
fn missing_platforms_respects_variants() {
    let index = [p("linux/amd64"), p("linux/arm/v7"), p("linux/arm64/v8")];
    assert!(missing_platforms(&index, &[p("linux/arm64"), p("linux/arm/v7")]).is_empty());
    assert_eq!(
        missing_platforms(&index, &[p("linux/arm/v6")]),
        vec![p("linux/arm/v6")]
    );
    assert_eq!(
        missing_platforms(&[p("linux/amd64")], &[p("linux/arm64")]),
        vec![p("linux/arm64")]
    );
    // An arm entry without variant serves any arm node, as containerd does.
    assert!(missing_platforms(&[p("linux/arm")], &[p("linux/arm/v7")]).is_empty());
}

#[test]
fn repositories_split_like_docker() {
    let cases = [
        ("alpine", "docker.io", "library/alpine"),
        ("samsonpe/table", "docker.io", "samsonpe/table"),
        (
            "registry.example.com/samsonpe/table",
            "registry.example.com",
            "samsonpe/table",
        ),
        ("127.0.0.1:5000/app", "127.0.0.1:5000", "app"),
        ("localhost/app", "localhost", "app"),
    ];
    for (image, registry, path) in cases {
        let r = Repository::parse(image).expect(image);
        assert_eq!(
            (r.registry.as_str(), r.path.as_str()),
            (registry, path),
            "{image}"
        );
    }
    assert!(Repository::parse("Reg.example.com/App").is_err());
    assert!(Repository::parse("r.example.com/app@sha256:00").is_err());
    assert_eq!(
        Repository::parse("alpine").expect("alpine").api_host(),
        "registry-1.docker.io"
    );
}

#[test]
fn digests_parse_and_shorten() {
    let d = Digest::of(b"hello");
    assert_eq!(
        d.as_str(),
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(d.short(), "sha256:2cf24dba5fb0");
    assert_eq!(Digest::parse(d.as_str()), Ok(d));
    assert!(Digest::parse("sha256:XYZ").is_err());
    assert!(Digest::parse("md5:00").is_err());
}

#[test]
fn challenges_parse() {
    assert_eq!(
        parse_challenge_for_test(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#
        ),
        Some((
            "https://auth.example.com/token".into(),
            Some("registry.example.com".into()),
            Some("repository:a/b:pull".into())
        ))
    );
    assert_eq!(
        parse_challenge_for_test(r#"Basic realm="Registry Realm""#),
        Some(("basic".into(), None, None))
    );
    assert_eq!(parse_challenge_for_test("Negotiate"), None);
}

/// A registry that only answers with a token from its own token service, which wants basic auth.
#[derive(Clone)]
struct FakeTokenRegistry {
    base: String,
    token_requests: Arc<AtomicUsize>,
}

const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":1,"platform":{"architecture":"amd64","os":"linux"}},
 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","size":1,"platform":{"architecture":"arm","os":"linux","variant":"v7"}},
 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc","size":1,"platform":{"architecture":"unknown","os":"unknown"}}]}"#;

async fn fake_manifest(
    State(s): State<FakeTokenRegistry>,
    axum::extract::Path(tag): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some("Bearer tok-123");
    if !authorized {
        let challenge = format!(
            r#"Bearer realm="{}/token",service="fake",scope="repository:team/app:pull""#,
            s.base
        );
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            "",
        )
            .into_response();
    }
    if tag != "1.0" {
        return (
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
            .into_response();
    }
    ([(header::CONTENT_TYPE, super::client::OCI_INDEX)], INDEX).into_response()
}

async fn fake_token(
    State(s): State<FakeTokenRegistry>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("deploy:s3cret")
    );
    let q = q.unwrap_or_default();
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
        || !q.contains("service=fake")
        || !q.contains("scope=repository%3Ateam%2Fapp%3Apull")
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(serde_json::json!({"token": "tok-123"})).into_response()
}

async fn start_fake() -> FakeTokenRegistry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = FakeTokenRegistry {
        base: format!("http://{addr}"),
        token_requests: Arc::new(AtomicUsize::new(0)),
    };
    let app = axum::Router::new()
        .route("/v2/team/app/manifests/{tag}", get(fake_manifest))
        .route("/token", get(fake_token))
        .with_state(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    state
}

fn registry_config(host: &str, password: Option<&str>) -> RegistryConfig {
    RegistryConfig {
        host: host.to_string(),
        username: password.map(|_| "deploy".to_string()),
        password: password.map(Secret::new),
        insecure: true,
    }
}

#[tokio::test]
async fn bearer_token_flow_resolves_an_index() {
    let fake = start_fake().await;
    let host = fake.base.trim_start_matches("http://").to_string();
    let client = RegistryClient::new(&[registry_config(&host, Some("s3cret"))]);
    let repo = format!("{host}/team/app");
    let resolved = client.resolve(&repo, "1.0").await.expect("resolves");
    assert!(resolved.is_index);
    assert_eq!(resolved.digest, Digest::of(INDEX.as_bytes()));
    assert_eq!(
        resolved.platforms,
        vec![p("linux/amd64"), p("linux/arm/v7")]
    );
    // The token is cached: a second resolve asks the token service no more.
    client.resolve(&repo, "1.0").await.expect("resolves again");
    assert_eq!(fake.token_requests.load(Ordering::SeqCst), 1);

    let missing = client.resolve(&repo, "2.0").await.expect_err("tag missing");
    assert!(
        matches!(missing, RegistryError::NotFound { .. }),
        "{missing:?}"
    );
    assert!(
        missing.to_string().contains(&format!("{repo}:2.0")),
        "{missing}"
    );
}

#[tokio::test]
async fn bearer_token_flow_with_wrong_password_is_refused() {
    let fake = start_fake().await;
    let host = fake.base.trim_start_matches("http://").to_string();
    let client = RegistryClient::new(&[registry_config(&host, Some("wrong"))]);
    let err = client
        .resolve(&format!("{host}/team/app"), "1.0")
        .await
        .expect_err("refused");
    assert!(matches!(err, RegistryError::AuthRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("team/app:1.0"), "{err}");
}

#[tokio::test]
async fn a_registry_that_is_down_is_unreachable() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let host = format!("127.0.0.1:{port}");
    let client = RegistryClient::new(&[]);
    let err = client
        .resolve(&format!("{host}/app"), "1")
        .await
        .expect_err("down");
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains(&format!("{host}/app:1")), "{err}");
}
