//! Reconciliation: services changed outside hoist since its last deploy are reported as drift.
//!
//! At start and then every `reconcile_every`, each environment's live run (the last
//! that succeeded) is compared with what Swarm runs: a service whose image is not
//! the deployed repository at the deployed digest has drifted. Drift is logged
//! once when found, set in `hoist_drift{project,env,service}`, and shown by
//! `/deploy status`; it clears when the service matches again (a new deploy, or
//! someone put it back). Environments with a run in progress are skipped.

use std::sync::Arc;

use tokio::sync::watch;

use super::Engine;
use crate::store::runs;
use crate::swarm::{Swarm, same_image};

pub async fn watch(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            break;
        }
        check(&engine).await;
        tokio::select! {
            _ = tokio::time::sleep(engine.options.reconcile_every) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One pass over every environment.
pub async fn check(engine: &Engine) {
    for project in &engine.config.projects {
        for env in &project.environments {
            let busy = engine
                .store
                .runs(Some(&project.path), Some(&env.name), Some(runs::RUNNING), 1)
                .await
                .map(|r| !r.is_empty())
                .unwrap_or(true);
            if busy {
                continue;
            }
            let Ok(Some(live)) = engine.store.live_run(&project.path, &env.name).await else {
                continue;
            };
            let (Some(image), Some(digest)) = (live.image.as_deref(), live.digest.as_deref())
            else {
                continue;
            };
            let deployed = format!("{image}@{digest}");
            let repository = image.rsplit_once(':').map_or(image, |(r, _)| r);
            // The run records the digest of its first image; services of other images are not judged.
            for svc in env.services.iter().filter(|s| s.image == repository) {
                let found = match engine.swarm.inspect(&svc.name).await {
                    Ok(Some(service)) => service.image.unwrap_or_default(),
                    Ok(None) => "no such service".to_string(),
                    Err(e) => {
                        tracing::debug!(service = %svc.name, error = %e, "cannot inspect for drift");
                        continue;
                    }
                };
                let drifted = !same_image(&found, &deployed);
                engine.set_drift(
                    &project.path,
                    &env.name,
                    &svc.name,
                    drifted.then_some(found.as_str()),
                    &deployed,
                );
            }
        }
    }
}
