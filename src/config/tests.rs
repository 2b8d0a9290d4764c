//! Config parsing and validation: every rejection names the file, key and reason.

use std::collections::HashMap;
use std::path::Path;

use super::*;

struct FakeSecrets(HashMap<&'static str, &'static str>);

impl SecretSource for FakeSecrets {
    fn env(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|s| s.to_string())
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        match path.to_str() {
            Some("/run/secrets/pw") => Ok("filepass\n".into()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "No such file",
            )),
        }
    }
}

fn secrets() -> FakeSecrets {
    FakeSecrets(HashMap::from([
        ("GL", "glpat-x"),
        ("WH", "hooktoken"),
        ("SIGN", "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
        ("BADSIGN", "whsec_notbase64!!"),
    ]))
}

const BASE: &str = r#"
[gitlab]
url = "http://127.0.0.1:9/"
token = "env:GL"

[[registries]]
host = "127.0.0.1:5000"

[[registries]]
host = "registry.example.com"
username = "deploy"
password = "file:/run/secrets/pw"

[[projects]]
path = "acme/shop"
webhook_token = "env:WH"

  [[projects.environments]]
  name = "production"
  policy = "tag"
  tag_pattern = "v*"
    [[projects.environments.services]]
    name = "shop"
    image = "registry.example.com/acme/shop"
    platforms = ["linux/arm/v7", "linux/arm64"]
    [projects.environments.services.create]
    ports = ["8080:80", "53:53/udp"]

  [[projects.environments]]
  name = "staging"
  policy = "manual"
  deploy_role = "developer"
    [[projects.environments.services]]
    name = "shop-staging"
    image = "registry.example.com/acme/shop"
    platforms = ["linux/amd64"]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("hoist.toml"), text, &secrets())
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected a config error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn full_config_with_defaults() {
    let c = parse(BASE).expect("valid config");
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.server.max_body_bytes, 26_214_400);
    assert_eq!(c.store.url.expose(), "sqlite://hoist.db");
    assert_eq!(
        (c.store.keep_bodies_days, c.store.keep_deliveries_days),
        (7, 90)
    );
    assert_eq!(c.gitlab.url, "http://127.0.0.1:9");
    assert_eq!(c.gitlab.token.expose(), "glpat-x");
    assert!(
        c.registries[0].insecure,
        "loopback registries default to http"
    );
    assert!(!c.registries[1].insecure);
    assert_eq!(
        c.registries[1].password.as_ref().map(Secret::expose),
        Some("filepass")
    );
    let p = &c.projects[0];
    assert_eq!(
        (p.manifest_job.as_str(), p.deploy_job.as_str()),
        ("manifest", "deploy")
    );
    let prod = &p.environments[0];
    assert!(prod.require_protected_tag && !prod.allow_downgrade);
    assert_eq!(prod.deploy_role, Role::Maintainer);
    assert!(prod.tag_pattern.is_match("v1.2.0") && !prod.tag_pattern.is_match("release-1"));
    assert_eq!(prod.services[0].tag, "{tag}");
    let create = prod.services[0].create.as_ref().expect("create spec");
    assert_eq!(create.replicas, 1);
    assert_eq!(
        create.ports[1],
        PortSpec {
            published: 53,
            target: 53,
            udp: true
        }
    );
    let staging = &p.environments[1];
    assert_eq!(staging.services[0].tag, "{short_sha}");
    assert_eq!(staging.deploy_role, Role::Developer);
    assert_eq!(prod.services[0].platforms[0].to_string(), "linux/arm/v7");
}

#[test]
fn retention_may_drop_bodies_at_once_and_keep_records_long() {
    let text = format!("[store]\nkeep_bodies_days = 0\nkeep_deliveries_days = 3650\n{BASE}");
    let c = parse(&text).expect("valid retention");
    assert_eq!(
        (c.store.keep_bodies_days, c.store.keep_deliveries_days),
        (0, 3650)
    );
}

#[test]
fn secrets_are_redacted_in_debug() {
    let c = parse(BASE).expect("valid config");
    let dump = format!("{c:?}");
    for secret in ["glpat-x", "hooktoken", "filepass"] {
        assert!(!dump.contains(secret), "{secret} leaked into Debug");
    }
}

#[test]
fn rejections_name_file_key_and_reason() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[gitlab]\nurl = \"http://x\"\ntoken = \"env:GL\"\nsurprise = 1\n",
            "hoist.toml: gitlab.surprise: unknown field `surprise`, expected `url` or `token`",
            "",
        ),
        (
            "[gitlab]\nurl = \"http://x\"\ntoken = \"glpat-literal\"\n",
            "hoist.toml: gitlab.token: secrets are never written literally",
            "",
        ),
        (
            "[gitlab]\nurl = \"http://x\"\ntoken = \"env:NOPE\"\n",
            "hoist.toml: gitlab.token: environment variable NOPE is not set",
            "",
        ),
        (
            "[gitlab]\nurl = \"gitlab.example.com\"\ntoken = \"env:GL\"\n",
            "hoist.toml: gitlab.url:",
            "must start with http",
        ),
        (
            "[server]\nlisten = \"nowhere\"\n[gitlab]\nurl = \"http://x\"\ntoken = \"env:GL\"\n",
            "hoist.toml: server.listen:",
            "not an address",
        ),
        (
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n[gitlab]\nurl = \"http://x\"\ntoken = \"env:GL\"\n",
            "hoist.toml: server.trusted_proxies[1]:",
            "not an address or a range like 10.0.0.0/8",
        ),
        (
            "[server]\ntrusted_proxies = [\"proxy.local\"]\n[gitlab]\nurl = \"http://x\"\ntoken = \"env:GL\"\n",
            "hoist.toml: server.trusted_proxies[0]:",
            "\"proxy.local\" is not an address",
        ),
        (
            "[gitlab]\nurl = \"http://x\"\ntoken = \"env:GL\"\n[[registries]]\nhost = \"r\"\nusername = \"u\"\npassword = \"file:/missing\"\n",
            "hoist.toml: registries[0].password: cannot read secret file /missing",
            "",
        ),
        (
            "[store]\nkeep_deliveries_days = 30\n[gitlab]\nurl = \"http://x\"\ntoken = \"env:GL\"\n",
            "hoist.toml: store.keep_deliveries_days: must be between 31 and 36500 days",
            "hoist must still know its key",
        ),
        (
            "[store]\nkeep_bodies_days = 60\nkeep_deliveries_days = 40\n[gitlab]\nurl = \"http://x\"\ntoken = \"env:GL\"\n",
            "hoist.toml: store.keep_bodies_days: must not be longer than store.keep_deliveries_days (40)",
            "",
        ),
        (
            "[store]\nkeep_bodies_days = -1\n[gitlab]\nurl = \"http://x\"\ntoken = \"env:GL\"\n",
            "hoist.toml: store.keep_bodies_days:",
            "",
        ),
        ("not toml [", "hoist.toml: not valid TOML", ""),
        (
            "[server]\nlisten = \"0.0.0.0:1\"\n",
            "hoist.toml: missing field `gitlab`",
            "",
        ),
    ];
    for (text, prefix, contains) in cases {
        let e = error(text);
        assert!(e.starts_with(prefix), "{e:?} should start with {prefix:?}");
        assert!(e.contains(contains), "{e:?} should contain {contains:?}");
    }
}

#[test]
fn project_rules() {
    let dup = format!("{BASE}\n[[projects]]\npath = \"acme/shop\"\nwebhook_token = \"env:WH\"\n");
    assert_eq!(
        error(&dup),
        "hoist.toml: projects[1].path: project acme/shop is configured twice"
    );
    let no_auth = BASE.replace("webhook_token = \"env:WH\"", "");
    assert!(
        error(&no_auth)
            .starts_with("hoist.toml: projects[0]: needs webhook_token or signing_token")
    );
    let signed = BASE.replace("webhook_token = \"env:WH\"", "signing_token = \"env:SIGN\"");
    let c = parse(&signed).expect("signing token config");
    assert_eq!(
        c.projects[0].signing_token.as_ref().map(|k| k.key.len()),
        Some(32)
    );
    let bad_sign = BASE.replace(
        "webhook_token = \"env:WH\"",
        "signing_token = \"env:BADSIGN\"",
    );
    assert_eq!(
        error(&bad_sign),
        "hoist.toml: projects[0].signing_token: the part after whsec_ is not base64"
    );
    let not_whsec = BASE.replace("webhook_token = \"env:WH\"", "signing_token = \"env:WH\"");
    assert!(error(&not_whsec).contains("projects[0].signing_token: must start with whsec_"));
}

#[test]
fn environment_and_service_rules() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "policy = \"tag\"",
            "policy = \"auto\"",
            "projects[0].environments[0].policy: unknown variant `auto`",
        ),
        (
            "tag_pattern = \"v*\"",
            "tag_pattern = \"v[\"",
            "projects[0].environments[0].tag_pattern: bad glob",
        ),
        (
            "platforms = [\"linux/arm/v7\", \"linux/arm64\"]",
            "platforms = [\"linux/arm/v7\", \"arm64\"]",
            "services[0].platforms[1]: \"arm64\" is not a platform",
        ),
        (
            "name = \"shop\"\n",
            "name = \"shop\"\n    tag = \"{version}\"\n",
            "services[0].tag: unknown placeholder {version}",
        ),
        (
            "name = \"shop\"\n",
            "name = \"shop\"\n    tag = \"v{tag\"\n",
            "services[0].tag: unclosed {",
        ),
        (
            "ports = [\"8080:80\", \"53:53/udp\"]",
            "ports = [\"8080\"]",
            "services[0].create.ports[0]: \"8080\" is not a port mapping",
        ),
        (
            "deploy_role = \"developer\"",
            "deploy_role = \"boss\"",
            "projects[0].environments[1].deploy_role: unknown variant `boss`",
        ),
        (
            "policy = \"manual\"",
            "policy = \"manual\"\n  tag_pattern = \"v*\"",
            "projects[0].environments[1].tag_pattern: only applies to policy = \"tag\"",
        ),
        (
            "name = \"staging\"",
            "name = \"production\"",
            "projects[0].environments[1].name: environment production is configured twice",
        ),
        (
            "image = \"registry.example.com/acme/shop\"\n    platforms = [\"linux/amd64\"]",
            "image = \"registry.example.com/acme/shop:latest\"\n    platforms = [\"linux/amd64\"]",
            "services[0].image: \"registry.example.com/acme/shop:latest\" must be a repository",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(BASE.contains(from), "fixture lacks {from:?}");
        let e = error(&BASE.replacen(from, to, 1));
        assert!(e.starts_with("hoist.toml: "), "{e}");
        assert!(e.contains(expected), "{e:?} should contain {expected:?}");
    }
}

#[test]
fn platforms_and_templates() {
    assert!(Platform::parse("linux/arm/v7").is_ok());
    assert!(Platform::parse("linux/amd64").is_ok());
    for bad in [
        "linux",
        "linux/",
        "/amd64",
        "linux/arm/v7/x",
        "Linux/AMD64",
        "",
    ] {
        assert!(Platform::parse(bad).is_err(), "{bad:?} accepted");
    }
    let values = TagValues {
        tag: Some("v1.2.0"),
        sha: "0123456789abcdef",
        ref_name: "Feature/Login_Page",
        pipeline_id: Some(42),
    };
    assert_eq!(render_tag("{tag}", &values).as_deref(), Ok("v1.2.0"));
    assert_eq!(
        render_tag("{short_sha}-{pipeline_id}", &values).as_deref(),
        Ok("01234567-42")
    );
    assert_eq!(
        render_tag("{ref_slug}", &values).as_deref(),
        Ok("feature-login-page")
    );
    let branch = TagValues {
        tag: None,
        ..values
    };
    assert!(render_tag("{tag}", &branch).is_err());
}

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../examples/hoist.toml");
    let secrets = FakeSecrets(HashMap::from([
        ("HOIST_GITLAB_TOKEN", "t"),
        ("HOIST_WEBHOOK_TOKEN", "w"),
    ]));
    let c = Config::parse(Path::new("examples/hoist.toml"), text, &secrets)
        .expect("example config is valid");
    assert_eq!(c.projects.len(), 1);
}

#[test]
fn roles_order_and_levels() {
    assert!(Role::Maintainer > Role::Developer);
    assert_eq!(Role::from_access_level(40), Some(Role::Maintainer));
    assert_eq!(Role::from_access_level(45), Some(Role::Maintainer));
    assert_eq!(Role::from_access_level(5), None);
}

#[test]
fn trusted_proxies_are_addresses_and_ranges() {
    let c = parse(&format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.7\", \"fd00::/8\"]\n{BASE}"
    ))
    .expect("valid config");
    let ip = |t: &str| t.parse::<std::net::IpAddr>().expect("ip");
    let trusted = |t: &str| c.server.trusted_proxies.iter().any(|r| r.contains(ip(t)));
    assert!(trusted("10.200.3.4") && trusted("192.168.1.7") && trusted("fd12::1"));
    assert!(!trusted("11.0.0.1") && !trusted("192.168.1.8") && !trusted("2001:db8::1"));
    assert!(
        parse(BASE)
            .expect("valid")
            .server
            .trusted_proxies
            .is_empty()
    );
}
