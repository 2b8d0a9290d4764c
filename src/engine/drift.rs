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
            for svc in &env.services {
                let Some(deployed) = deployed(&live, &svc.name, &svc.image) else {
                    continue;
                };
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

/// What `live` deployed as `service` (of repository `repository`): the service's own
/// recorded image at its digest. A run from before every service was recorded (migration
/// 0006) has only its first image: it judges the services of that repository alone.
fn deployed(live: &runs::RunRow, service: &str, repository: &str) -> Option<String> {
    if !live.services.is_empty() {
        return live.service(service).map(runs::ServiceImage::pinned);
    }
    let (image, digest) = (live.image.as_deref()?, live.digest.as_deref()?);
    let recorded = image.rsplit_once(':').map_or(image, |(r, _)| r);
    (recorded == repository).then(|| format!("{image}@{digest}"))
}
