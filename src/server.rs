//! `hoist serve`: wires store, writer, worker and HTTP server, and shuts them down in order.
//!
//! Shutdown order: stop accepting, let in-flight requests finish (their
//! deliveries are committed before they answer), drain the writer, let the
//! worker finish its batch, close the store.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::engine::{Engine, EngineOptions};
use crate::http::{self, AppState};
use crate::store::Store;
use crate::webhook::Receiver;
use crate::webhook::writer::Writer;

/// Connects to the Docker engine named in the config (the connection is lazy: nothing is sent yet).
pub fn docker_client(host: &str) -> anyhow::Result<bollard::Docker> {
    // API 1.41 (Docker 20.10) is the oldest engine hoist supports; newer engines accept it too.
    let version = bollard::ClientVersion {
        major_version: 1,
        minor_version: 41,
    };
    if let Some(path) = host.strip_prefix("unix://") {
        bollard::Docker::connect_with_unix(path, 30, &version)
            .context("cannot use the docker socket")
    } else {
        let addr = host.replacen("tcp://", "http://", 1);
        bollard::Docker::connect_with_http(&addr, 30, &version)
            .context("cannot use the docker host")
    }
}

/// Runs the server on an already bound listener until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let options = EngineOptions {
        lease_ttl: std::time::Duration::from_secs(config.store.lease_seconds),
        ..EngineOptions::default()
    };
    run_with(config, listener, options, shutdown).await
}

/// [`run`] with explicit engine timings (tests shorten them).
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    options: EngineOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    crate::metrics::install();
    let store = Store::open(config.store.url.expose())
        .await
        .context("cannot open the store")?;
    crate::metrics::set_queue_depth(store.queue_depth().await.unwrap_or(0));
    if !store.is_postgres() {
        // One process per SQLite file: its old leases are this hoist's own, from before a
        // restart. Forget them so its runs resume at once.
        store
            .clear_leases()
            .await
            .context("cannot reset the store's leases")?;
    }

    // Neither client contacts anything yet: hoist starts while GitLab or Docker is down.
    let gitlab = crate::gitlab::HttpClient::with_policy(
        &config.gitlab.url,
        config.gitlab.token.clone(),
        options.gitlab_retry.clone(),
    )
    .map_err(|e| anyhow::anyhow!("cannot set up the GitLab client: {e}"))?;
    let registry = crate::registry::RegistryClient::new(&config.registries);
    let swarm = crate::swarm::DockerSwarm::new(&config.docker);
    let engine = Engine::new(
        config.clone(),
        store.clone(),
        Arc::new(gitlab),
        registry,
        swarm,
        options,
    );

    let committed = Arc::new(Notify::new());
    let (writer, writer_task) = Writer::spawn(store.clone(), committed.clone());
    let (stop_worker, worker_stop) = watch::channel(false);
    let worker_task = tokio::spawn(crate::worker::run(
        engine.clone(),
        committed.clone(),
        worker_stop.clone(),
        writer.finisher(),
    ));
    let checkpoint_task = crate::store::checkpoint::spawn(store.clone(), worker_stop.clone());
    let upkeep_task = crate::metrics::spawn_upkeep(worker_stop.clone());
    let retention_task = crate::store::retention::spawn(
        store.clone(),
        config.store.keep_bodies_days,
        config.store.keep_deliveries_days,
        worker_stop.clone(),
    );
    let engine_tasks = engine.spawn(worker_stop);

    let docker = match docker_client(&config.docker.host) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "docker engine not usable; /readyz will say so");
            None
        }
    };
    let state = Arc::new(AppState {
        config: config.clone(),
        store: store.clone(),
        docker,
        engine: Some(engine.clone()),
    });
    // The first delivery after a start is answered as fast as any: the intake's
    // connection and its filter of stored keys are ready before the first request is read.
    writer.started().await;
    let receiver = Arc::new(Receiver::new(config.clone(), writer));
    let app = http::router(state, receiver);

    let addr = listener.local_addr().ok();
    tracing::info!(listen = ?addr, projects = config.projects.len(), "hoist serving");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("http server failed")?;
    tracing::info!("stopped accepting; draining");

    // The router (and with it every Writer clone) is gone: the writer drains and ends.
    writer_task.await.context("writer task failed")?;
    let _ = stop_worker.send(true);
    worker_task.await.context("worker task failed")?;
    // Runs in flight stay `running` in the store and resume at the next start.
    for task in engine_tasks
        .into_iter()
        .chain(checkpoint_task)
        .chain([upkeep_task, retention_task])
    {
        task.await.context("engine task failed")?;
    }
    store.close().await;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}
