//! The deploy kit and the CI files: GitLab's schema, the jobs hoist plays, the stack file and its config.
//!
//! `deploy/gitlab-ci/hoist.gitlab-ci.yml` and `.gitlab-ci.yml` are validated
//! against GitLab's own schema (`tests/data/gitlab-ci.schema.json`); the template
//! must carry the job names and shape hoist's defaults expect. `deploy/stack.yml`
//! is checked structurally here and by `docker stack config` when a test engine
//! is available (`HOIST_TEST_DOCKER_HOST`, required when `CI` is set), and
//! `deploy/hoist.toml` must load and agree with both.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hoist::config::{Config, Platform, Policy, SecretSource};
use serde_json::{Map, Value, json};

const TEMPLATE: &str = "deploy/gitlab-ci/hoist.gitlab-ci.yml";
const OWN_CI: &str = ".gitlab-ci.yml";
const STACK: &str = "deploy/stack.yml";
const STACK_CONFIG: &str = "deploy/hoist.toml";
const SCHEMA: &str = "tests/data/gitlab-ci.schema.json";

/// Top-level keys of a `.gitlab-ci.yml` that are not jobs.
const GLOBAL_KEYWORDS: &[&str] = &[
    "after_script",
    "before_script",
    "cache",
    "default",
    "image",
    "include",
    "services",
    "spec",
    "stages",
    "variables",
    "workflow",
];

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Parses YAML as GitLab and Docker do (merge keys applied) into JSON values.
/// Custom tags (`!reference`) are refused: the files must stay plain YAML.
fn parse_yaml(text: &str) -> Result<Value, String> {
    let mut value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    value
        .apply_merge()
        .map_err(|e| format!("bad merge key: {e}"))?;
    if let Some(tag) = first_tag(&value) {
        return Err(format!("uses the custom tag {tag}: keep it plain YAML"));
    }
    serde_json::to_value(value).map_err(|e| format!("does not map onto JSON: {e}"))
}

fn yaml(rel: &str) -> Value {
    parse_yaml(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn first_tag(value: &serde_norway::Value) -> Option<String> {
    match value {
        serde_norway::Value::Tagged(t) => Some(t.tag.to_string()),
        serde_norway::Value::Sequence(items) => items.iter().find_map(first_tag),
        serde_norway::Value::Mapping(map) => map
            .iter()
            .find_map(|(k, v)| first_tag(k).or_else(|| first_tag(v))),
        _ => None,
    }
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(&read(SCHEMA)).expect("the vendored GitLab CI schema is JSON");
        jsonschema::draft7::new(&schema).expect("GitLab's CI schema compiles as draft 7")
    })
}

/// Every schema violation, as `instance path: message` (shortened: oneOf errors quote whole jobs).
fn schema_errors(doc: &Value) -> Vec<String> {
    validator()
        .iter_errors(doc)
        .map(|e| {
            let text = format!("{}: {e}", e.instance_path());
            match text.char_indices().nth(400) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text,
            }
        })
        .collect()
}

fn assert_schema_valid(name: &str, doc: &Value) {
    let errors = schema_errors(doc);
    assert!(
        errors.is_empty(),
        "{name} does not validate against GitLab's CI schema:\n{}",
        errors.join("\n")
    );
}

// ---------------------------------------------------------------------------
// A small model of a pipeline file: jobs with `extends` resolved.

fn as_map(doc: &Value) -> &Map<String, Value> {
    doc.as_object().expect("a CI file is a mapping")
}

/// Names of the jobs GitLab would create (hidden `.jobs` and global keywords left out).
fn job_names(doc: &Value) -> Vec<String> {
    as_map(doc)
        .keys()
        .filter(|k| !k.starts_with('.') && !GLOBAL_KEYWORDS.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// GitLab's `extends`: parents first, hashes merged deeply, everything else replaced.
fn resolve_job(doc: &Value, name: &str) -> Map<String, Value> {
    fn resolve(doc: &Value, name: &str, depth: usize) -> Map<String, Value> {
        assert!(
            depth <= 11,
            "extends nests deeper than GitLab allows at {name}"
        );
        let job = as_map(doc)
            .get(name)
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("job {name} is missing or not a mapping"));
        let parents: Vec<&str> = match job.get("extends") {
            Some(Value::String(parent)) => vec![parent.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut out = Map::new();
        for parent in parents {
            merge(&mut out, resolve(doc, parent, depth + 1));
        }
        let mut own = job.clone();
        own.remove("extends");
        merge(&mut out, own);
        out
    }
    fn merge(base: &mut Map<String, Value>, over: Map<String, Value>) {
        for (key, value) in over {
            match (base.get_mut(&key), value) {
                (Some(Value::Object(b)), Value::Object(o)) => merge(b, o),
                (_, value) => {
                    base.insert(key, value);
                }
            }
        }
    }
    resolve(doc, name, 0)
}

/// A variable as the job sees it: its own `variables`, else the global ones.
fn variable(doc: &Value, job: &Map<String, Value>, name: &str) -> Option<String> {
    let value_of = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("value").and_then(Value::as_str).map(str::to_string),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    job.get("variables")
        .and_then(|v| v.get(name))
        .or_else(|| as_map(doc).get("variables").and_then(|v| v.get(name)))
        .and_then(value_of)
}

fn stages(doc: &Value) -> Vec<String> {
    let declared: Vec<String> = as_map(doc)
        .get("stages")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_else(|| ["build", "test", "deploy"].map(str::to_string).to_vec());
    let mut all = vec![".pre".to_string()];
    all.extend(declared);
    all.push(".post".to_string());
    all
}

fn stage_of(job: &Map<String, Value>) -> String {
    job.get("stage")
        .and_then(Value::as_str)
        .unwrap_or("test")
        .to_string()
}

/// Lines of `script`, `before_script` and `after_script` (nested lists flattened).
fn script_lines(job: &Map<String, Value>) -> Vec<String> {
    fn flatten(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.extend(s.lines().map(str::to_string)),
            Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for key in ["before_script", "script", "after_script"] {
        if let Some(v) = job.get(key) {
            flatten(v, &mut out);
        }
    }
    out
}

fn squash_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Build jobs of the template: `build-<arch>`, each with `HOIST_ARCH` and `HOIST_PLATFORM`.
fn build_jobs(doc: &Value) -> Vec<(String, Map<String, Value>)> {
    job_names(doc)
        .into_iter()
        .filter(|n| n.starts_with("build-"))
        .map(|n| {
            let job = resolve_job(doc, &n);
            (n, job)
        })
        .collect()
}

/// What is wrong with a template for hoist; empty when nothing is.
fn template_problems(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let names = job_names(doc);
    let stages = stages(doc);
    let stage_index = |job: &Map<String, Value>| stages.iter().position(|s| *s == stage_of(job));

    let mut manual_job = |name: &str| -> Option<Map<String, Value>> {
        if !names.iter().any(|n| n == name) {
            problems.push(format!("no job `{name}` (hoist's default job name)"));
            return None;
        }
        let job = resolve_job(doc, name);
        if job.get("when").and_then(Value::as_str) != Some("manual") {
            problems.push(format!("job `{name}` is not `when: manual`"));
        }
        Some(job)
    };
    let manifest = manual_job("manifest");
    let deploy = manual_job("deploy");

    if let Some(deploy) = &deploy {
        let has_env = match deploy.get("environment") {
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Object(o)) => o
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty()),
            _ => false,
        };
        if !has_env {
            problems.push("job `deploy` has no `environment`".into());
        }
    }

    let builds = build_jobs(doc);
    if builds.len() < 2 {
        problems.push(format!(
            "expected a build job per architecture (build-amd64, build-arm64, …), found {}",
            builds.len()
        ));
    }
    if let Some(manifest) = &manifest {
        let manifest_stage = stage_index(manifest);
        for (name, job) in &builds {
            if stage_index(job) >= manifest_stage || stage_index(job).is_none() {
                problems.push(format!(
                    "build job `{name}` (stage {}) is not in a stage before `manifest` (stage {})",
                    stage_of(job),
                    stage_of(manifest)
                ));
            }
        }
        if let Some(deploy) = &deploy
            && stage_index(deploy) <= manifest_stage
        {
            problems.push(format!(
                "`deploy` (stage {}) is not after `manifest` (stage {})",
                stage_of(deploy),
                stage_of(manifest)
            ));
        }
        let lines = script_lines(manifest);
        if !lines
            .iter()
            .any(|l| squash_spaces(l).contains("docker buildx imagetools create"))
        {
            problems.push("`manifest` does not run `docker buildx imagetools create`".into());
        }
        for (name, job) in builds
            .iter()
            .chain([("manifest".to_string(), manifest.clone())].iter())
        {
            if !script_lines(job)
                .iter()
                .any(|l| l.contains("${CI_COMMIT_TAG:-$CI_COMMIT_SHORT_SHA}"))
            {
                problems.push(format!(
                    "`{name}` does not tag with $CI_COMMIT_TAG, else $CI_COMMIT_SHORT_SHA"
                ));
            }
        }
    }

    // Every job, hidden templates included: `docker manifest` needs the CLI's experimental mode.
    for name in as_map(doc).keys() {
        let Some(job) = as_map(doc).get(name).and_then(Value::as_object) else {
            continue;
        };
        for line in script_lines(job) {
            if squash_spaces(&line).contains("docker manifest") {
                problems.push(format!("`{name}` uses `docker manifest`: {}", line.trim()));
            }
        }
    }

    // The manifest job combines exactly the architectures the build jobs push.
    let arches: BTreeSet<String> = as_map(doc)
        .get("variables")
        .and_then(|v| v.get("HOIST_ARCHES"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut built = BTreeSet::new();
    for (name, job) in &builds {
        match variable(doc, job, "HOIST_ARCH") {
            Some(arch) => {
                built.insert(arch);
            }
            None => problems.push(format!("`{name}` sets no HOIST_ARCH")),
        }
        if variable(doc, job, "HOIST_PLATFORM").is_none() {
            problems.push(format!("`{name}` sets no HOIST_PLATFORM"));
        }
    }
    if arches != built {
        problems.push(format!(
            "HOIST_ARCHES {arches:?} differs from the architectures built {built:?}"
        ));
    }
    problems
}

fn template() -> Value {
    yaml(TEMPLATE)
}

// ---------------------------------------------------------------------------
// GitLab CI files

#[test]
fn template_and_own_pipeline_validate_against_gitlab_schema() {
    assert_schema_valid(TEMPLATE, &template());
    assert_schema_valid(OWN_CI, &yaml(OWN_CI));
}

#[test]
fn schema_rejects_an_invalid_job() {
    let valid = json!({
        "stages": ["build"],
        "job": {"stage": "build", "script": ["true"], "when": "manual"}
    });
    assert_schema_valid("the valid sample", &valid);
    let mut invalid = valid.clone();
    invalid["job"]["when"] = json!("sometimes");
    let errors = schema_errors(&invalid);
    assert!(
        !errors.is_empty(),
        "a job with `when: sometimes` passed the schema"
    );
    assert!(
        errors.iter().any(|e| e.starts_with("/job")),
        "the error should point at the job: {errors:?}"
    );
}

#[test]
fn template_has_the_jobs_hoist_plays() {
    let problems = template_problems(&template());
    assert!(problems.is_empty(), "{TEMPLATE}:\n{}", problems.join("\n"));
    let names = job_names(&template());
    for arch in ["build-amd64", "build-arm64"] {
        assert!(names.iter().any(|n| n == arch), "{TEMPLATE} lacks {arch}");
    }
}

/// The checks above must be able to fail: each broken copy of the template is caught.
#[test]
fn template_checks_catch_broken_templates() {
    type Breakage = (&'static str, fn(&mut Value), &'static str);
    let cases: [Breakage; 7] = [
        (
            "manifest on_success",
            |d| d["manifest"]["when"] = json!("on_success"),
            "`manifest` is not `when: manual`",
        ),
        (
            "deploy renamed",
            |d| {
                let job = d["deploy"].take();
                d["release"] = job;
                d.as_object_mut().expect("mapping").remove("deploy");
            },
            "no job `deploy`",
        ),
        (
            "deploy without environment",
            |d| {
                d["deploy"]
                    .as_object_mut()
                    .expect("deploy is a mapping")
                    .remove("environment");
            },
            "no `environment`",
        ),
        (
            "build in the manifest stage",
            |d| d["build-arm64"]["stage"] = json!("manifest"),
            "`build-arm64` (stage manifest) is not in a stage before",
        ),
        (
            "docker manifest in a hidden job",
            |d| {
                d[".hoist-docker"]["after_script"] =
                    json!(["docker  manifest push $HOIST_IMAGE_NAME:latest"]);
            },
            "uses `docker manifest`",
        ),
        (
            "docker manifest instead of imagetools",
            |d| {
                d["manifest"]["script"] = json!([
                    "docker manifest create $HOIST_IMAGE_NAME:${CI_COMMIT_TAG:-$CI_COMMIT_SHORT_SHA} a b"
                ]);
            },
            "does not run `docker buildx imagetools create`",
        ),
        (
            "an architecture built but not combined",
            |d| d["variables"]["HOIST_ARCHES"] = json!("amd64"),
            "HOIST_ARCHES",
        ),
    ];
    for (what, breakage, expected) in cases {
        let mut doc = template();
        breakage(&mut doc);
        let problems = template_problems(&doc);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{what}: expected a problem containing {expected:?}, got {problems:?}"
        );
    }
}

#[test]
fn yaml_with_custom_tags_is_refused() {
    let err = parse_yaml("job:\n  script:\n    - !reference [.setup, script]\n")
        .expect_err("a `!reference` tag was accepted");
    assert!(err.contains("!reference"), "{err}");
    assert!(parse_yaml("job:\n  script:\n    - \"true\"\n").is_ok());
}

// ---------------------------------------------------------------------------
// deploy/stack.yml

fn hoist_service(stack: &Value) -> &Map<String, Value> {
    stack
        .get("services")
        .and_then(|s| s.get("hoist"))
        .and_then(Value::as_object)
        .expect("deploy/stack.yml has a service `hoist`")
}

/// `(source, target)` of each long-syntax or short-syntax entry of `key`.
fn mounts(service: &Map<String, Value>, key: &str) -> Vec<(String, String)> {
    service
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|m| match m {
                    Value::String(s) => {
                        let mut parts = s.split(':');
                        let source = parts.next()?.to_string();
                        let target = parts.next().unwrap_or(&source).to_string();
                        Some((source, target))
                    }
                    Value::Object(o) => {
                        let source = o.get("source")?.as_str()?.to_string();
                        let target = o
                            .get("target")
                            .and_then(Value::as_str)
                            .unwrap_or(&source)
                            .to_string();
                        Some((source, target))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn stack_runs_hoist_on_a_manager_with_socket_secrets_and_config() {
    let stack = yaml(STACK);
    let service = hoist_service(&stack);
    let text = |v: Option<&Value>| v.map(Value::to_string).unwrap_or_default();

    let volumes = mounts(service, "volumes");
    assert!(
        volumes
            .iter()
            .any(|(s, t)| s == "/var/run/docker.sock" && t == "/var/run/docker.sock"),
        "the Docker socket is not bind-mounted: {volumes:?}"
    );
    let data = volumes
        .iter()
        .find(|(_, t)| t == "/var/lib/hoist")
        .expect("a volume is mounted at /var/lib/hoist");
    assert!(
        stack.get("volumes").and_then(|v| v.get(&data.0)).is_some(),
        "volume {} is not declared at the top level",
        data.0
    );

    let deploy = service.get("deploy").expect("the service has `deploy`");
    let constraints: Vec<String> = deploy
        .pointer("/placement/constraints")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(Value::as_str)
                .map(|s| s.replace(' ', ""))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        constraints.iter().any(|c| c == "node.role==manager"),
        "no manager placement: {constraints:?}"
    );
    assert_eq!(deploy.get("replicas"), Some(&json!(1)), "one replica");
    assert_eq!(
        deploy.pointer("/update_config/failure_action"),
        Some(&json!("rollback"))
    );
    assert_eq!(
        deploy.pointer("/update_config/order"),
        Some(&json!("stop-first")),
        "two hoists must never share the SQLite file"
    );

    let health = text(service.get("healthcheck").and_then(|h| h.get("test")));
    assert!(health.contains("/healthz"), "healthcheck: {health}");

    for (key, top) in [("secrets", "secrets"), ("configs", "configs")] {
        let used = mounts(service, key);
        assert!(!used.is_empty(), "the service uses no {key}");
        for (source, _) in &used {
            assert!(
                stack.get(top).and_then(|t| t.get(source)).is_some(),
                "{key} {source} is not declared at the top level"
            );
        }
    }
    let configs = mounts(service, "configs");
    assert!(
        configs.iter().any(|(_, t)| t == "/etc/hoist/hoist.toml"),
        "the config is not mounted at /etc/hoist/hoist.toml: {configs:?}"
    );
    let command = text(service.get("command"));
    assert!(
        command.contains("/etc/hoist/hoist.toml"),
        "command: {command}"
    );
}

/// Checks the stack file with the docker CLI (`docker stack config` parses,
/// validates against the compose schema and interpolates, without deploying).
#[test]
fn docker_accepts_the_stack_file() {
    let Some(host) = std::env::var_os("HOIST_TEST_DOCKER_HOST") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but HOIST_TEST_DOCKER_HOST is not: scripts/test starts the test engine \
             and exports it; deploy/stack.yml must be checked by `docker stack config` in CI"
        );
        eprintln!(
            "note: HOIST_TEST_DOCKER_HOST is not set, so `docker stack config` did not check \
             {STACK} (source .hoist-test/env, or run scripts/test)"
        );
        return;
    };
    let stack_config = |image: Option<&str>, gid: Option<&str>| {
        let mut cmd = Command::new("docker");
        cmd.arg("--host")
            .arg(&host)
            .args(["stack", "config", "-c", STACK])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("HOIST_CONFIG_VERSION")
            .env_remove("HOIST_IMAGE")
            .env_remove("HOIST_DOCKER_GID");
        if let Some(image) = image {
            cmd.env("HOIST_IMAGE", image);
        }
        if let Some(gid) = gid {
            cmd.env("HOIST_DOCKER_GID", gid);
        }
        cmd.output()
            .expect("cannot run the docker CLI (is it installed?)")
    };

    let out = stack_config(Some("registry.example.com/ops/hoist:0.1.0"), Some("998"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docker stack config rejected {STACK}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        stdout
    );
    for expected in [
        "image: registry.example.com/ops/hoist:0.1.0",
        "user: 10001:998",
        "node.role == manager",
        "/var/run/docker.sock",
        "name: hoist_toml_v1",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from the interpolated stack:\n{stdout}"
        );
    }

    // Without the docker group id the deploy must stop, naming the variable.
    let out = stack_config(Some("registry.example.com/ops/hoist:0.1.0"), None);
    assert!(
        !out.status.success(),
        "docker stack config accepted a stack without HOIST_DOCKER_GID"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HOIST_DOCKER_GID"), "stderr: {stderr}");
}

const STACK_REPLICAS: &str = "deploy/stack-replicas.yml";

#[test]
fn the_replicas_stack_runs_three_hoists_on_postgresql_without_a_data_volume() {
    let stack = yaml(STACK_REPLICAS);
    let service = hoist_service(&stack);
    let deploy = service.get("deploy").expect("the service has `deploy`");
    assert_eq!(deploy.get("replicas"), Some(&json!(3)));
    assert_eq!(
        deploy.pointer("/update_config/order"),
        Some(&json!("start-first")),
        "replicas share PostgreSQL safely: the new one starts first"
    );
    let volumes = mounts(service, "volumes");
    assert!(
        volumes.iter().all(|(_, t)| t != "/var/lib/hoist"),
        "no SQLite volume: {volumes:?}"
    );
    assert!(
        mounts(service, "secrets")
            .iter()
            .any(|(s, _)| s == "hoist_store_url"),
        "the PostgreSQL URL (it holds a password) is a secret"
    );
    // Everything else (socket, config, other secrets, healthcheck) as in the one-replica stack.
    let single = yaml(STACK);
    let one = hoist_service(&single);
    for key in ["command", "user", "healthcheck", "configs", "ports"] {
        assert_eq!(service.get(key), one.get(key), "{key} differs from {STACK}");
    }
    for secret in mounts(one, "secrets") {
        assert!(
            mounts(service, "secrets").contains(&secret),
            "secret {secret:?} of {STACK} is missing"
        );
    }
}

#[test]
fn docker_accepts_the_replicas_stack_file() {
    let Some(host) = std::env::var_os("HOIST_TEST_DOCKER_HOST") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but HOIST_TEST_DOCKER_HOST is not"
        );
        return;
    };
    let out = Command::new("docker")
        .arg("--host")
        .arg(&host)
        .args(["stack", "config", "-c", STACK_REPLICAS])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HOIST_IMAGE", "registry.example.com/ops/hoist:0.1.0")
        .env("HOIST_DOCKER_GID", "998")
        .env_remove("HOIST_CONFIG_VERSION")
        .output()
        .expect("cannot run the docker CLI");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docker stack config rejected {STACK_REPLICAS}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in ["replicas: 3", "hoist_store_url", "spread: node.id"] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
}

// ---------------------------------------------------------------------------
// deploy/hoist.toml

/// Docker secrets only: every `file:` under /run/secrets resolves, nothing else does.
struct DockerSecrets;

impl SecretSource for DockerSecrets {
    fn env(&self, _: &str) -> Option<String> {
        None
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        if path.starts_with("/run/secrets") {
            Ok(format!("secret from {}\n", path.display()))
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a Docker secret",
            ))
        }
    }
}

/// The `NAME`s of every `"file:/run/secrets/NAME"` in the config text.
fn secret_files(text: &str) -> BTreeSet<String> {
    text.split("\"file:")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|path| {
            path.strip_prefix("/run/secrets/")
                .unwrap_or_else(|| panic!("{path} is not a Docker secret under /run/secrets"))
                .to_string()
        })
        .collect()
}

#[test]
fn stack_config_loads_and_matches_stack_and_template() {
    let text = read(STACK_CONFIG);
    let config = Config::parse(&repo_path(STACK_CONFIG), &text, &DockerSecrets)
        .unwrap_or_else(|e| panic!("{STACK_CONFIG} does not load: {e}"));

    // The stack mounts exactly the secrets the config reads.
    let stack = yaml(STACK);
    let service = hoist_service(&stack);
    let mounted: BTreeSet<String> = mounts(service, "secrets")
        .into_iter()
        .map(|(_, target)| target)
        .collect();
    assert_eq!(
        secret_files(&text),
        mounted,
        "secrets read by {STACK_CONFIG} vs mounted by {STACK}"
    );

    // Store on the volume, the socket the stack binds, the port it publishes.
    let store = config.store.url.expose();
    let store_path = store
        .strip_prefix("sqlite://")
        .expect("the stack config uses SQLite");
    assert!(
        store_path.starts_with("/var/lib/hoist/"),
        "store.url {store} is not on the /var/lib/hoist volume"
    );
    assert_eq!(config.docker.host, "unix:///var/run/docker.sock");
    assert_eq!(config.server.listen.port(), 8080);
    let ports = service
        .get("ports")
        .map(Value::to_string)
        .unwrap_or_default();
    assert!(ports.contains("\"target\":8080"), "stack publishes {ports}");

    // The template provides the jobs, tags and platforms the config asks for.
    let ci = template();
    let jobs = job_names(&ci);
    let built: BTreeSet<Platform> = build_jobs(&ci)
        .iter()
        .filter_map(|(_, job)| variable(&ci, job, "HOIST_PLATFORM"))
        .map(|p| Platform::parse(&p).unwrap_or_else(|e| panic!("template platform {p}: {e}")))
        .collect();
    assert!(!config.projects.is_empty(), "no project configured");
    for project in &config.projects {
        for job in [&project.manifest_job, &project.deploy_job] {
            assert!(
                jobs.contains(job),
                "{}: job {job} is not in {TEMPLATE}",
                project.path
            );
        }
        for env in &project.environments {
            let expected = match env.policy {
                Policy::Tag => "{tag}",
                Policy::Manual => "{short_sha}",
            };
            for service in &env.services {
                assert_eq!(
                    service.tag, expected,
                    "{}/{}: the template tags images {expected} for this policy",
                    project.path, env.name
                );
                for platform in &service.platforms {
                    assert!(
                        built.contains(platform),
                        "{}/{}: platform {platform} is not built by {TEMPLATE}",
                        project.path,
                        env.name
                    );
                }
            }
        }
    }
}
