//! The operator's controllers together: RentedHosts and RentedHostPools, until shutdown.

use crate::controller::{self, Config};
use crate::metrics::Metrics;
use crate::{crd_check, pool};
use futures::FutureExt;
use kube::Client;
use std::sync::Arc;
use std::time::Duration;

/// How long the controllers may take to finish after shutdown was asked: within the
/// pod's default grace period (30 s) with time left to release the Lease, whatever a
/// controller is waiting on.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs every controller until `shutdown` completes, once the served CRDs carry every field
/// this binary writes.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.boxed().shared();
    let instance = config.instance.clone();
    if !crd_check::wait_until_served(&client, &metrics, instance, shutdown.clone()).await {
        return;
    }
    let controllers = async {
        tokio::join!(
            controller::run(client.clone(), config.clone(), metrics, shutdown.clone()),
            pool::run(client, config, shutdown.clone()),
        )
    };
    let overdue = async {
        shutdown.clone().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = controllers => {}
        _ = overdue => tracing::warn!(grace = ?SHUTDOWN_GRACE, "the controllers did not finish within the shutdown grace period; stopping anyway"),
    }
}
