//! The operator's controllers together: RentedHosts, RentedHostPools and RentedHostBudgets,
//! until shutdown;
//! and one replica of the process, alone or elected among several.

use crate::budget::{self, Budgets};
use crate::controller::{self, Config};
use crate::crd_check::{self, Audience};
use crate::leader::{self, Ended, Leadership, LeaseConfig};
use crate::metrics::Metrics;
use crate::pool;
use futures::FutureExt;
use kube::Client;
use std::sync::Arc;
use std::time::Duration;

/// How long the controllers may take to finish after shutdown was asked: within the
/// pod's default grace period (30 s) with time left to release the Lease, whatever a
/// controller is waiting on.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// One replica until `shutdown`: without `election` it leads from the start; with it, it
/// stands by (ready) until it holds the Lease, then leads until shutdown or the Lease is
/// lost. A replica whose binary the served CRDs do not fit never takes the Lease: in an
/// upgrade whose CRD step was skipped the older leader keeps serving, the new pod stays
/// unready and the rollout stops there.
pub async fn run_replica(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    election: Option<LeaseConfig>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Ended {
    let shutdown = shutdown.boxed().shared();
    let Some(lease) = election else {
        metrics.readiness.leading();
        run(client, config, Leadership::always(), metrics, shutdown).await;
        return Ended::Stopped;
    };
    let audience = Audience::UnlessLed {
        lease: (lease.namespace.clone(), lease.name.clone()),
        instance: config.instance.clone(),
    };
    if !crd_check::wait_until_served(&client, &metrics, audience, shutdown.clone()).await {
        return Ended::Stopped;
    }
    metrics.readiness.standing_by();
    let work_client = client.clone();
    let leadership = lease.leadership.clone();
    let work = |stop: leader::Shutdown| async move {
        metrics.readiness.leading();
        run(
            work_client,
            config,
            leadership,
            metrics.clone(),
            stop.wait(),
        )
        .await;
        metrics.readiness.stopped_leading();
    };
    leader::run_elected(client, lease, shutdown, work).await
}

/// Runs every controller until `shutdown` completes, once the served CRDs carry every field
/// this binary writes.
pub async fn run(
    client: Client,
    config: Config,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.boxed().shared();
    let audience = Audience::Objects {
        instance: config.instance.clone(),
    };
    if !crd_check::wait_until_served(&client, &metrics, audience, shutdown.clone()).await {
        return;
    }
    let pool_settings = pool::Settings {
        namespace: config.namespace.clone(),
        instance: config.instance.clone(),
        default_deletion_policy: config.default_deletion_policy,
    };
    let (budgets, budget_cache) = Budgets::new(client.clone());
    let _ = metrics.budgets.set(budgets.store());
    let controllers = async {
        tokio::join!(
            controller::run(
                client.clone(),
                config.clone(),
                leadership.clone(),
                metrics.clone(),
                (budgets.clone(), budget_cache),
                shutdown.clone()
            ),
            budget::run(
                client.clone(),
                budgets,
                budget::Settings {
                    namespace: config.namespace.clone(),
                    seen_before_sweep: config
                        .sweep_seen_for
                        .unwrap_or(budget::seen_before_sweep(config.provider.timeout)),
                },
                leadership.clone(),
                shutdown.clone()
            ),
            pool::run(client, pool_settings, leadership, metrics, shutdown.clone()),
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
