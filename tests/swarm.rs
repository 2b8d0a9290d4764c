//! Deploys against a real Docker engine in swarm mode and real registries (scripts/testenv.sh).
//!
//! Each test pushes its own images (tests/swarm_support), deploys a uniquely
//! named service and removes it at the end. Without the HOIST_TEST_* variables
//! the tests skip with a note, except in CI, where they fail.

mod swarm_support;

use std::time::Duration;

use hoist::config::{CreateSpec, DockerConfig, ServiceConfig};
use hoist::registry::{ImageRegistry, RegistryClient, RegistryError, ResolvedImage};
use hoist::swarm::{
    DeployError, DeployOptions, DockerSwarm, OutcomeState, Swarm, SwarmError, Target,
    check_platforms, deploy,
};
use swarm_support::{
    Behaviour, DOCKER_LIST, OCI_INDEX, Pusher, Recording, TestEnv, platform, repo_path, test_env,
    unique_name,
};

const ALL: &[&str] = &["linux/amd64", "linux/arm64", "linux/arm/v7"];

fn options() -> DeployOptions {
    DeployOptions {
        converge_timeout: Duration::from_secs(120),
        poll_interval: Duration::from_millis(50),
        max_conflict_retries: 5,
        monitor: Duration::from_secs(1),
    }
}

fn swarm(env: &TestEnv) -> DockerSwarm {
    DockerSwarm::new(&DockerConfig {
        host: env.docker_host.clone(),
    })
    .with_call_timeout(Duration::from_secs(20))
}

fn service(name: &str, repository: &str, tag: &str, platforms: &[&str]) -> ServiceConfig {
    ServiceConfig {
        name: name.to_string(),
        image: repository.to_string(),
        tag: tag.to_string(),
        platforms: platforms.iter().map(|p| platform(p)).collect(),
        create: Some(CreateSpec {
            replicas: 1,
            ports: vec![],
            env: vec!["MODE=test".into()],
            constraints: vec![],
        }),
    }
}

/// A service name, its repository in the anonymous registry and a pusher for it.
fn setup(env: &TestEnv, label: &str) -> (String, String, String, Pusher) {
    let name = unique_name(label);
    let path = repo_path(&name);
    let repository = format!("{}/{path}", env.registry);
    (name, path, repository, Pusher::anonymous(&env.registry))
}

async fn resolve(client: &RegistryClient, repository: &str, tag: &str) -> ResolvedImage {
    client.resolve(repository, tag).await.expect("tag resolves")
}

fn running_images(env: &TestEnv, name: &str) -> Vec<String> {
    env.docker(&[
        "service",
        "ps",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Image}} {{.CurrentState}}",
        name,
    ])
    .lines()
    .filter(|l| l.contains("Running"))
    .map(|l| l.split(' ').next().unwrap_or_default().to_string())
    .collect()
}

#[tokio::test]
async fn first_deploy_creates_the_service_at_the_pinned_index_digest() {
    let Some(env) = test_env() else { return };
    let (name, path, repository, pusher) = setup(&env, "create");
    let _guard = env.remove_on_drop(&name);
    let index = pusher
        .push_multiarch(&path, "v1", ALL, Behaviour::Serve, OCI_INDEX)
        .await;
    let client = RegistryClient::new(&[env.anonymous_registry()]);
    let image = resolve(&client, &repository, "v1").await;
    assert_eq!(
        image.digest.as_str(),
        index,
        "the index digest, not one platform's"
    );
    assert!(image.is_index);
    assert_eq!(
        image.platforms,
        ALL.iter().map(|p| platform(p)).collect::<Vec<_>>()
    );

    let cfg = service(&name, &repository, "v1", &["linux/amd64", "linux/arm64"]);
    let swarm = swarm(&env);
    let outcome = deploy(
        &swarm,
        Target {
            service: &cfg,
            image: &image,
            auth: None,
        },
        &options(),
    )
    .await
    .expect("deploy");
    assert_eq!(outcome.state, OutcomeState::Created, "{outcome:?}");
    assert_eq!(outcome.after.as_deref(), Some(image.pinned().as_str()));
    assert_eq!(outcome.before, None);
    assert!(outcome.task_errors.is_empty(), "{:?}", outcome.task_errors);
    assert_eq!(running_images(&env, &name), vec![image.pinned()]);
    let spec = env.spec_json(&name);
    assert_eq!(spec["UpdateConfig"]["FailureAction"], "rollback");
    assert_eq!(spec["UpdateConfig"]["Order"], "start-first");
    assert_eq!(spec["UpdateConfig"]["Monitor"], 1_000_000_000u64);
    assert_eq!(
        spec["TaskTemplate"]["ContainerSpec"]["Env"],
        serde_json::json!(["MODE=test"])
    );
    eprintln!(
        "created in {:?} with {} API calls",
        outcome.converged_in, outcome.api_calls
    );
}

#[tokio::test]
async fn second_deploy_updates_only_the_image_and_the_same_digest_changes_nothing() {
    let Some(env) = test_env() else { return };
    let (name, path, repository, pusher) = setup(&env, "update");
    let _guard = env.remove_on_drop(&name);
    pusher
        .push_multiarch(&path, "v1", ALL, Behaviour::Serve, OCI_INDEX)
        .await;
    pusher
        .push_multiarch(&path, "v2", ALL, Behaviour::Serve, DOCKER_LIST)
        .await;
    let client = RegistryClient::new(&[env.anonymous_registry()]);
    let v1 = resolve(&client, &repository, "v1").await;
    let v2 = resolve(&client, &repository, "v2").await;
    assert_ne!(v1.digest, v2.digest);
    assert_eq!(v2.media_type, DOCKER_LIST);

    let swarm = swarm(&env);
    let cfg = service(&name, &repository, "v1", &["linux/arm64"]);
    let first = deploy(
        &swarm,
        Target {
            service: &cfg,
            image: &v1,
            auth: None,
        },
        &options(),
    )
    .await
    .expect("create");
    assert_eq!(first.state, OutcomeState::Created);
    // Someone tuned the service by hand: the deploy must keep it.
    env.docker(&[
        "service",
        "update",
        "--detach",
        "--label-add",
        "owner=ops",
        "--update-delay",
        "10ms",
        &name,
    ]);
    let before = env.spec_json(&name);

    let second = deploy(
        &swarm,
        Target {
            service: &cfg,
            image: &v2,
            auth: None,
        },
        &options(),
    )
    .await
    .expect("update");
    assert_eq!(second.state, OutcomeState::Updated, "{second:?}");
    assert_eq!(second.service_id, first.service_id, "same service");
    assert!(
        second.version_after > second.version_before.expect("version before"),
        "{second:?}"
    );
    assert_eq!(second.before.as_deref(), Some(v1.pinned().as_str()));
    assert_eq!(second.after.as_deref(), Some(v2.pinned().as_str()));
    let mut after = env.spec_json(&name);
    assert_eq!(after["TaskTemplate"]["ContainerSpec"]["Image"], v2.pinned());
    after["TaskTemplate"]["ContainerSpec"]["Image"] =
        before["TaskTemplate"]["ContainerSpec"]["Image"].clone();
    assert_eq!(after, before, "only the image may change");
    assert_eq!(running_images(&env, &name), vec![v2.pinned()]);
    eprintln!(
        "updated in {:?} with {} API calls",
        second.converged_in, second.api_calls
    );

    let recording = Recording::new(swarm);
    let third = deploy(
        &recording,
        Target {
            service: &cfg,
            image: &v2,
            auth: None,
        },
        &options(),
    )
    .await
    .expect("again");
    assert_eq!(third.state, OutcomeState::Unchanged);
    assert_eq!(third.version_after, second.version_after, "nothing written");
    assert_eq!(
        recording.updates.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert_eq!(third.api_calls, 1, "one inspect");
}

#[tokio::test]
async fn index_without_a_required_platform_is_refused_before_any_swarm_call() {
    let Some(env) = test_env() else { return };
    let (name, path, repository, pusher) = setup(&env, "noarm64");
    pusher
        .push_multiarch(
            &path,
            "v1",
            &["linux/amd64", "linux/arm/v7"],
            Behaviour::Serve,
            OCI_INDEX,
        )
        .await;
    let client = RegistryClient::new(&[env.anonymous_registry()]);
    let image = resolve(&client, &repository, "v1").await;
    let cfg = service(&name, &repository, "v1", &["linux/arm/v7", "linux/arm64"]);
    let recording = Recording::new(swarm(&env));
    let err = deploy(
        &recording,
        Target {
            service: &cfg,
            image: &image,
            auth: None,
        },
        &options(),
    )
    .await
    .expect_err("refused");
    let DeployError::Gate(gate) = &err else {
        panic!("expected a gate refusal, got {err:?}")
    };
    assert_eq!(gate.missing_required, vec![platform("linux/arm64")]);
    assert!(
        err.to_string().contains("linux/arm64") && err.to_string().contains(&repository),
        "{err}"
    );
    assert_eq!(recording.calls(), 0, "no Swarm call");
}

#[tokio::test]
async fn a_node_whose_platform_the_index_lacks_is_refused() {
    let Some(env) = test_env() else { return };
    let (name, path, repository, pusher) = setup(&env, "noamd64");
    pusher
        .push_multiarch(
            &path,
            "v1",
            &["linux/arm64", "linux/arm/v7"],
            Behaviour::Serve,
            OCI_INDEX,
        )
        .await;
    let client = RegistryClient::new(&[env.anonymous_registry()]);
    let image = resolve(&client, &repository, "v1").await;
    let swarm = swarm(&env);
    let cfg = service(&name, &repository, "v1", &["linux/arm64"]);
    let err = deploy(
        &swarm,
        Target {
            service: &cfg,
            image: &image,
            auth: None,
        },
        &options(),
    )
    .await
    .expect_err("the amd64 node has no image");
    let DeployError::Gate(gate) = &err else {
        panic!("expected a gate refusal, got {err:?}")
    };
    assert!(gate.missing_required.is_empty());
    assert_eq!(gate.nodes.len(), 1, "{gate:?}");
    assert_eq!(gate.nodes[0].platform, platform("linux/amd64"));
    assert!(err.to_string().contains("linux/amd64"), "{err}");
    assert!(
        swarm.inspect(&name).await.expect("inspect").is_none(),
        "nothing created"
    );

    // Node labels steer the check like they steer placement.
    let nodes = swarm.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1);
    let node_id = nodes[0].id.clone();
    let label = format!("hoist-test-{}", unique_name("l"));
    env.docker(&[
        "node",
        "update",
        "--label-add",
        &format!("{label}=pi"),
        &node_id,
    ]);
    let nodes = swarm.nodes().await.expect("nodes");
    let on_pis = [format!("node.labels.{label}==pi")];
    let off_pis = [format!("node.labels.{label}!=pi")];
    let result_on = check_platforms("x", &image.platforms, &[], Some((&nodes, &on_pis)));
    let result_off = check_platforms("x", &image.platforms, &[], Some((&nodes, &off_pis)));
    env.docker(&["node", "update", "--label-rm", &label, &node_id]);
    assert!(
        result_on.is_err(),
        "the labelled amd64 node is allowed and lacks an image"
    );
    assert!(
        result_off.is_ok(),
        "no node is allowed, so none lacks an image"
    );
}

#[tokio::test]
async fn an_image_that_exits_at_once_is_rolled_back_with_the_task_error() {
    let Some(env) = test_env() else { return };
    let (name, path, repository, pusher) = setup(&env, "rollback");
    let _guard = env.remove_on_drop(&name);
    pusher
        .push_multiarch(&path, "good", ALL, Behaviour::Serve, OCI_INDEX)
        .await;
    pusher
        .push_multiarch(&path, "bad", ALL, Behaviour::Crash, OCI_INDEX)
        .await;
    let client = RegistryClient::new(&[env.anonymous_registry()]);
    let good = resolve(&client, &repository, "good").await;
    let bad = resolve(&client, &repository, "bad").await;
    let swarm = swarm(&env);
    let cfg = service(&name, &repository, "good", &["linux/amd64"]);
    let first = deploy(
        &swarm,
        Target {
            service: &cfg,
            image: &good,
            auth: None,
        },
        &options(),
    )
    .await
    .expect("create");
    assert_eq!(first.state, OutcomeState::Created);

    let outcome = deploy(
        &swarm,
        Target {
            service: &cfg,
            image: &bad,
            auth: None,
        },
        &options(),
    )
    .await
    .expect("deploy");
    assert_eq!(outcome.state, OutcomeState::RolledBack, "{outcome:?}");
    assert!(!outcome.state.succeeded());
    assert_eq!(
        outcome.after.as_deref(),
        Some(good.pinned().as_str()),
        "back at the previous digest"
    );
    assert!(!outcome.task_errors.is_empty(), "{outcome:?}");
    assert!(
        outcome
            .task_errors
            .iter()
            .any(|e| e.error.contains("exit") && e.exit_code == Some(1)),
        "{:?}",
        outcome.task_errors
    );
    let spec = env.spec_json(&name);
    assert_eq!(
        spec["TaskTemplate"]["ContainerSpec"]["Image"],
        good.pinned()
    );
    eprintln!(
        "rolled back in {:?}: {:?}",
        outcome.converged_in, outcome.task_errors
    );
}

#[tokio::test]
async fn a_hand_made_service_that_pauses_on_failure_is_rolled_back_by_hoist() {
    let Some(env) = test_env() else { return };
    let (name, path, repository, pusher) = setup(&env, "paused");
    let _guard = env.remove_on_drop(&name);
    pusher
        .push_multiarch(&path, "good", ALL, Behaviour::Serve, OCI_INDEX)
        .await;
    pusher
        .push_multiarch(&path, "bad", ALL, Behaviour::Crash, OCI_INDEX)
        .await;
    let client = RegistryClient::new(&[env.anonymous_registry()]);
    let good = resolve(&client, &repository, "good").await;
    let bad = resolve(&client, &repository, "bad").await;
    env.docker(&[
        "service",
        "create",
        "--quiet",
        "--detach=false",
        "--name",
        &name,
        "--update-failure-action",
        "pause",
        "--update-monitor",
        "1s",
        "--rollback-monitor",
        "1s",
        &good.pinned(),
    ]);
    let cfg = service(&name, &repository, "bad", &["linux/amd64"]);
    let outcome = deploy(
        &swarm(&env),
        Target {
            service: &cfg,
            image: &bad,
            auth: None,
        },
        &options(),
    )
    .await
    .expect("deploy");
    assert_eq!(outcome.state, OutcomeState::RolledBack, "{outcome:?}");
    assert_eq!(outcome.after.as_deref(), Some(good.pinned().as_str()));
    assert_eq!(running_images(&env, &name), vec![good.pinned()]);
    assert_eq!(
        env.spec_json(&name)["UpdateConfig"]["FailureAction"],
        "pause",
        "hoist left the spec alone"
    );
}

#[tokio::test]
async fn a_concurrent_out_of_band_update_is_handled_by_reading_again() {
    let Some(env) = test_env() else { return };
    let (name, path, repository, pusher) = setup(&env, "oob");
    let _guard = env.remove_on_drop(&name);
    pusher
        .push_multiarch(&path, "v1", ALL, Behaviour::Serve, OCI_INDEX)
        .await;
    pusher
        .push_multiarch(&path, "v2", ALL, Behaviour::Serve, OCI_INDEX)
        .await;
    let client = RegistryClient::new(&[env.anonymous_registry()]);
    let v1 = resolve(&client, &repository, "v1").await;
    let v2 = resolve(&client, &repository, "v2").await;
    let cfg = service(&name, &repository, "v1", &["linux/amd64"]);
    let recording = Recording::new(swarm(&env));
    deploy(
        &recording,
        Target {
            service: &cfg,
            image: &v1,
            auth: None,
        },
        &options(),
    )
    .await
    .expect("create");

    // Between hoist's read and its write, someone else updates the service.
    let oob_env = env.clone();
    let oob_name = name.clone();
    if let Ok(mut hook) = recording.before_first_update.lock() {
        *hook = Some(Box::new(move || {
            oob_env.docker(&[
                "service",
                "update",
                "--detach",
                "--label-add",
                "touched=by-hand",
                &oob_name,
            ]);
        }));
    }
    let outcome = deploy(
        &recording,
        Target {
            service: &cfg,
            image: &v2,
            auth: None,
        },
        &options(),
    )
    .await
    .expect("deploy");
    assert_eq!(outcome.state, OutcomeState::Updated, "{outcome:?}");
    assert_eq!(outcome.conflicts, 1, "{outcome:?}");
    assert_eq!(
        recording.updates.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let labels = swarm_support::service_labels(&env, &name);
    assert_eq!(
        labels.get("touched").map(String::as_str),
        Some("by-hand"),
        "the other writer's change is kept"
    );
    assert_eq!(running_images(&env, &name), vec![v2.pinned()]);
}

#[tokio::test]
async fn a_private_image_is_resolved_and_pulled_with_credentials() {
    let Some(env) = test_env() else { return };
    let name = unique_name("private");
    let path = repo_path(&name);
    let repository = format!("{}/{path}", env.auth_registry);
    let _guard = env.remove_on_drop(&name);
    let pusher = Pusher::with_basic_auth(&env.auth_registry, &env.user, &env.password);
    let index = pusher
        .push_multiarch(&path, "v1", ALL, Behaviour::Serve, OCI_INDEX)
        .await;

    let anonymous = RegistryClient::new(&[]);
    let err = anonymous
        .resolve(&repository, "v1")
        .await
        .expect_err("needs credentials");
    assert!(matches!(err, RegistryError::AuthRefused { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("{repository}:v1")),
        "{err}"
    );
    let mut wrong = env.private_registry();
    wrong.password = Some(hoist::config::Secret::new("wrong"));
    let err = RegistryClient::new(&[wrong])
        .resolve(&repository, "v1")
        .await
        .expect_err("wrong password");
    assert!(matches!(err, RegistryError::AuthRefused { .. }), "{err:?}");

    let client = RegistryClient::new(&[env.private_registry()]);
    let image = resolve(&client, &repository, "v1").await;
    assert_eq!(image.digest.as_str(), index);
    let auth = client
        .credentials_for(&repository)
        .expect("credentials for the private registry");
    let cfg = service(&name, &repository, "v1", &["linux/amd64"]);
    let outcome = deploy(
        &swarm(&env),
        Target {
            service: &cfg,
            image: &image,
            auth: Some(&auth),
        },
        &options(),
    )
    .await
    .expect("deploy");
    assert_eq!(outcome.state, OutcomeState::Created, "{outcome:?}");
    assert_eq!(
        running_images(&env, &name),
        vec![image.pinned()],
        "the engine pulled with the credentials"
    );
}

#[tokio::test]
async fn registry_errors_name_the_image_and_single_manifests_have_one_platform() {
    let Some(env) = test_env() else { return };
    let (_name, path, repository, pusher) = setup(&env, "single");
    pusher
        .push_image(
            &path,
            Some("plain"),
            &platform("linux/arm/v7"),
            Behaviour::Serve,
            "single",
        )
        .await;
    let client = RegistryClient::new(&[env.anonymous_registry()]);
    let image = resolve(&client, &repository, "plain").await;
    assert!(!image.is_index);
    assert_eq!(image.platforms, vec![platform("linux/arm/v7")]);

    let err = client
        .resolve(&repository, "nope")
        .await
        .expect_err("tag missing");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("{repository}:nope")),
        "{err}"
    );
    let err = client
        .resolve(&format!("{}/hoist-test/never-pushed", env.registry), "v1")
        .await
        .expect_err("no repo");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_engine_is_a_clear_error() {
    let swarm = DockerSwarm::new(&DockerConfig {
        host: "unix:///nonexistent/hoist-test.sock".into(),
    })
    .with_call_timeout(Duration::from_secs(2));
    let err = swarm.ping().await.expect_err("no engine there");
    assert!(matches!(err, SwarmError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/hoist-test.sock"),
        "{err}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn ping_answers_on_the_test_engine() {
    let Some(env) = test_env() else { return };
    let swarm = swarm(&env);
    swarm.ping().await.expect("ping");
    let (state, manager) = swarm.manager_status().await.expect("info");
    assert_eq!(state, "active");
    assert!(manager);
}
