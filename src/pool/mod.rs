//! The RentedHostPool controller: keeps `spec.replicas` RentedHost children, each owned by
//! the pool (so that deleting the pool deletes them). Decisions are made on a quorum read of
//! the pool and a quorum list of its children, never on a cache: a stale view that counted
//! too few would rent too many, one that counted too many (or a stale `replicas`) would
//! release hosts that are wanted. Child names are `<pool>-<index>`, so that a create
//! repeated for any reason meets the child it made; a delete names the child's uid and the
//! resourceVersion the decision saw. Children that carry the pool's label but no controller
//! (the pool was deleted with `--cascade=orphan`, then applied again) are adopted, as a
//! ReplicaSet adopts its pods, rather than rented anew.

pub mod decision;
mod reconcile;
pub mod throttle;

pub use reconcile::MANAGER;

use crate::api::{DeletionPolicy, RentedHost, RentedHostPool};
use crate::kit::{self, events::EventQueue};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::readiness::Cache;
use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use parking_lot::Mutex;
use reconcile::{Context, error_policy, reconcile};
use std::sync::Arc;

/// What the pool controller needs of the operator's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch only this namespace (default: all namespaces).
    pub namespace: Option<String>,
    /// Identity of this replica in events.
    pub instance: Option<String>,
    /// Deletion policy of objects that leave `spec.deletionPolicy` unset.
    pub default_deletion_policy: DeletionPolicy,
}

/// Event publishers of the pool controller (pools are few; see `EventQueue`).
const EVENT_SHARDS: usize = 4;

/// Runs the pool controller until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: Settings,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespace = settings.namespace.as_deref();
    let pools: Api<RentedHostPool> = kit::scoped(&client, namespace);
    let children: Api<PartialObjectMeta<RentedHost>> = kit::scoped(&client, namespace);
    // Any change of a child (its status too) brings its pool back; metadata is enough to
    // know which pool, and the decision lists the children itself. Every RentedHost is
    // watched, not only labelled ones: a child whose label was removed is still found by
    // its owner. Only names and owners are kept.
    let (children_store, writer) = reflector::store();
    let children_metrics = metrics.clone();
    let child_changes = watcher(children, watcher::Config::default().any_semantic())
        .default_backoff()
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                children_metrics.readiness.synced(Cache::PoolChildren);
            }
        })
        .modify(|m| {
            m.metadata.managed_fields = None;
            m.metadata.annotations = None;
            m.metadata.labels = None;
        })
        .reflect(writer)
        .touched_objects();
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: settings.instance.clone(),
    };
    let ctx = Arc::new(Context {
        events: EventQueue::with_shards(&client, &reporter, EVENT_SHARDS),
        client,
        default_deletion_policy: settings.default_deletion_policy,
        leadership,
        foreign: Mutex::default(),
        children: children_store,
    });
    let (pool_store, pool_writer) = reflector::store();
    let pool_changes = watcher(pools, watcher::Config::default().any_semantic())
        .default_backoff()
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                metrics.readiness.synced(Cache::RentedHostPools);
            }
        })
        .reflect(pool_writer)
        .applied_objects();
    Controller::for_stream(pool_changes, pool_store)
        .owns_stream(child_changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "pool reconcile failed");
            }
        })
        .await;
    ctx.events.flush_at_shutdown().await;
}
