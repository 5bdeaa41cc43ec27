//! The operator's controllers together: RentedHosts and RentedHostPools, until shutdown.

use crate::controller::{self, Config};
use crate::metrics::Metrics;
use crate::pool;
use futures::FutureExt;
use kube::Client;
use std::sync::Arc;

/// Runs every controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.boxed().shared();
    tokio::join!(
        controller::run(client.clone(), config.clone(), metrics, shutdown.clone()),
        pool::run(client, config, shutdown),
    );
}
