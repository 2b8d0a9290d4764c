//! Benchmark: hoist's `deploy()` to converged vs `docker service update --detach=false --image …`.
//!
//! Same engine, same service, same kind of image change, alternating pairs
//! (hoist A→B, CLI B→A, …) so drift hits both equally. Needs the test engine:
//! `. scripts/testenv.sh && testenv_up && scripts/bench-swarm` (PAIRS=N to change the count).

mod common;
#[path = "../tests/swarm_support/mod.rs"]
mod swarm_support;

use std::process::Command;
use std::time::{Duration, Instant};

use common::median;

use hoist::config::{CreateSpec, DockerConfig, ServiceConfig};
use hoist::registry::{ImageRegistry, RegistryClient};
use hoist::swarm::{DeployOptions, DockerSwarm, OutcomeState, Target, deploy};
use swarm_support::{Behaviour, OCI_INDEX, Pusher, platform, repo_path, unique_name};

#[tokio::main]
async fn main() {
    let Some(env) = swarm_support::test_env() else {
        eprintln!("bench skipped: no test environment");
        return;
    };
    let pairs: usize = std::env::var("PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let monitor = Duration::from_secs(1);
    let name = unique_name("bench");
    let path = repo_path(&name);
    let repository = format!("{}/{path}", env.registry);
    let _guard = env.remove_on_drop(&name);
    let pusher = Pusher::anonymous(&env.registry);
    let all = ["linux/amd64", "linux/arm64", "linux/arm/v7"];
    pusher
        .push_multiarch(&path, "a", &all, Behaviour::Serve, OCI_INDEX)
        .await;
    pusher
        .push_multiarch(&path, "b", &all, Behaviour::Serve, OCI_INDEX)
        .await;
    let client = RegistryClient::new(&[env.anonymous_registry()]);
    let a = client.resolve(&repository, "a").await.expect("a");
    let b = client.resolve(&repository, "b").await.expect("b");
    let cfg = ServiceConfig {
        name: name.clone(),
        image: repository.clone(),
        tag: "a".into(),
        platforms: vec![platform("linux/amd64")],
        create: Some(CreateSpec {
            replicas: 1,
            ports: vec![],
            env: vec![],
            constraints: vec![],
        }),
    };
    let swarm = DockerSwarm::new(&DockerConfig {
        host: env.docker_host.clone(),
    });
    let options = DeployOptions {
        monitor,
        ..DeployOptions::default()
    };
    let created = deploy(
        &swarm,
        Target {
            service: &cfg,
            image: &a,
            auth: None,
        },
        &options,
    )
    .await
    .expect("create");
    assert_eq!(created.state, OutcomeState::Created);

    let mut hoist_times = Vec::new();
    let mut cli_times = Vec::new();
    let mut calls = Vec::new();
    println!("pair  hoist(A→B)  cli(B→A)  hoist API calls");
    for pair in 1..=pairs {
        let outcome = deploy(
            &swarm,
            Target {
                service: &cfg,
                image: &b,
                auth: None,
            },
            &options,
        )
        .await
        .expect("hoist deploy");
        assert_eq!(outcome.state, OutcomeState::Updated, "{outcome:?}");
        hoist_times.push(outcome.converged_in);
        calls.push(outcome.api_calls);

        let started = Instant::now();
        let out = Command::new("docker")
            .args([
                "-H",
                &env.docker_host,
                "service",
                "update",
                "--quiet",
                "--detach=false",
                "--image",
                &a.pinned(),
                &name,
            ])
            .output()
            .expect("docker CLI");
        let cli = started.elapsed();
        assert!(
            out.status.success(),
            "docker service update: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cli_times.push(cli);
        println!(
            "{pair:>4}  {:>9.3}s  {:>7.3}s  {:>6}",
            outcome.converged_in.as_secs_f64(),
            cli.as_secs_f64(),
            outcome.api_calls
        );
    }
    let h = median(&mut hoist_times);
    let c = median(&mut cli_times);
    calls.sort();
    println!(
        "median: hoist {:.3}s, docker CLI {:.3}s, ratio hoist/CLI {:.3}; hoist API calls per deploy: median {} (min {}, max {})",
        h.as_secs_f64(),
        c.as_secs_f64(),
        h.as_secs_f64() / c.as_secs_f64(),
        calls[calls.len() / 2],
        calls[0],
        calls[calls.len() - 1]
    );
}
