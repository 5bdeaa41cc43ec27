//! The RentedHost controller: wiring (watches, predicates, the Secret watch). The decision
//! is in `decision`, its I/O in `reconcile`, the state shared by reconciles in `context`.

pub mod connections;
mod context;
pub mod credentials;
pub mod credentials_in_use;
pub mod decision;
pub mod foreign;
mod holds;
pub mod journal;
pub mod ledger;
pub mod poller;
pub mod reason;
mod reconcile;
pub mod resolution;
pub mod writes;

pub use crate::kit::Error;
pub use context::Context;

use crate::account::Accounts;
use crate::api::{RentedHost, RentedHostBudget};
use crate::budget::Budgets;
use crate::kit;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::provider::ClientSettings;
use crate::readiness::Cache;
use credentials::SecretRef;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, Predicate, WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Controller settings: the flags of `run` (the defaults live here), and what `run` derives.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub provider: ClientSettings,
    #[command(flatten)]
    pub home: credentials::Home,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Whether another install, or a person, rents on the same provider account. Then (and
    /// in namespaced mode, unless set to false) the answer of a lost createRent is never
    /// guessed from the listing: the claims of the other renters are out of sight, so
    /// every unclaimed host in the window is left to a person (`CreateOutcomeUnknown`).
    #[arg(long, env = "SHARED_ACCOUNT", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub shared_account: Option<bool>,
    /// Host poll interval.
    #[arg(long, default_value = "60s", value_parser = crate::config::positive_duration)]
    pub poll_interval: Duration,
    /// Poll interval while a host is starting or stopping.
    #[arg(long, default_value = "15s", value_parser = crate::config::positive_duration)]
    pub fast_poll_interval: Duration,
    /// How long after its call a createRent with a lost answer may take to show its host.
    #[arg(long, default_value = "2m", value_parser = crate::config::positive_duration)]
    pub create_grace: Duration,
    /// Clock difference allowed between us and the provider when matching creation times.
    #[arg(long, default_value = "30s", value_parser = crate::config::positive_duration)]
    pub clock_skew: Duration,
    /// How long the budget controller must itself have seen a reservation before its sweep
    /// may settle it. Tests only: by default it follows the request timeout
    /// (`budget::seen_before_sweep`), and a shorter one lets a stepped clock return a
    /// reservation whose create may still rent.
    #[arg(long, hide = true, value_parser = crate::config::positive_duration)]
    pub sweep_seen_for: Option<Duration>,
    /// Multiplies every delay of the retry table (tests shorten it; 1.0 in production).
    #[arg(long, default_value_t = 1.0, hide = true, value_parser = crate::config::positive_factor)]
    pub retry_scale: f64,
    /// Deletion policy of objects that leave `spec.deletionPolicy` unset.
    #[arg(long, value_enum, ignore_case = true, default_value_t = crate::api::DeletionPolicy::Delete, env = "DEFAULT_DELETION_POLICY")]
    pub default_deletion_policy: crate::api::DeletionPolicy,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u16,
    /// Identity of this replica in events and the Lease (the pod's name).
    #[arg(long = "pod-name", env = "POD_NAME")]
    pub instance: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        crate::config::defaults()
    }
}

impl Config {
    /// Whether every claim on the accounts is in sight, so that a lost create may be paired
    /// with a host nobody claims: cluster-wide, and with the account not shared.
    pub fn sees_every_claim(&self) -> bool {
        !self.shared_account.unwrap_or(self.namespace.is_some())
    }
}

/// Objects whose credentials come from Secret `namespace/name`.
fn users_of_secret(
    store: &Store<RentedHost>,
    default: Option<&SecretRef>,
    namespace: &str,
    name: &str,
) -> Vec<ObjectRef<RentedHost>> {
    store
        .state()
        .into_iter()
        .filter(|o| credentials::secret_ref(o, default).is_some_and(|r| r.is(namespace, name)))
        .map(|o| ObjectRef::from_obj(&*o))
        .collect()
}

/// Objects of `namespace` whose last create was not sent for a budget.
fn waiting_for_budget(store: &Store<RentedHost>, namespace: &str) -> Vec<ObjectRef<RentedHost>> {
    store
        .state()
        .into_iter()
        .filter(|o| o.namespace().as_deref() == Some(namespace))
        .filter(|o| {
            let status = o.status.as_ref();
            let reason = status.and_then(|s| s.reason(crate::api::ConditionType::Ready));
            reason.is_some_and(|r| r.waits_for_budget())
        })
        .map(|o| ObjectRef::from_obj(&*o))
        .collect()
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: Config,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    (budgets, budget_cache): (Arc<Budgets>, Writer<RentedHostBudget>),
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<RentedHost> = kit::scoped(&client, config.namespace.as_deref());
    let budget_api: Api<RentedHostBudget> = kit::scoped(&client, config.namespace.as_deref());
    let secrets: Api<PartialObjectMeta<Secret>> = kit::scoped(&client, config.namespace.as_deref());
    let (store, writer) = reflector::store();
    let ready_metrics = metrics.clone();
    // Only changes of spec (generation), annotations, finalizers and deletion trigger a
    // reconcile: the controller's own status writes do not.
    let triggers = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                ready_metrics.readiness.synced(Cache::RentedHosts);
            }
        })
        // Nothing reads managedFields, which are most of an object's size (dropped, not
        // cleared: a cleared vector keeps its capacity).
        .modify(|obj| obj.metadata.managed_fields = None)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::annotations)
                .combine(predicates::finalizers),
            Default::default(),
        );
    let reporter = Reporter {
        controller: writes::MANAGER.into(),
        instance: config.instance.clone(),
    };
    // The poller wakes objects whose host changed at the provider, and objects wake the
    // claimants they refused once their claim ends.
    let (wake_tx, wake_rx) = tokio::sync::mpsc::channel(1024);
    // A create reads its Secret and records itself within the provider's timeout.
    let took_over = leadership.took_over();
    let (guard, guard_checks) = credentials_in_use::Guard::new(config.provider.timeout, took_over);
    let call_limit = config.provider.timeout * 2;
    let ctx = Arc::new(Context {
        guard,
        wake: wake_tx.clone(),
        started: jiff::Timestamp::now(),
        events: crate::kit::events::EventQueue::start(&client, &reporter),
        held: journal::Held::default(),
        client,
        accounts: Accounts::new(config.provider.clone(), Some(metrics.provider_observer())),
        ledger: ledger::Ledger::new(store.clone()),
        holds: holds::Holds::default(),
        siblings: crate::pool::throttle::SiblingHolds::new(call_limit),
        credentials: credentials::Cache::default(),
        connections: connections::Connections::default(),
        reboot_records: writes::RebootRecords::default(),
        recent: writes::RecentStatuses::default(),
        default_credentials: config.home.default_credentials(),
        leadership,
        store: store.clone(),
        metrics: metrics.clone(),
        config: config.clone(),
        budgets: budgets.clone(),
    });
    let _ = metrics.store.set(store.clone());
    // The poller ends with the controller.
    let poll = tokio::spawn(poller::run(ctx.clone(), wake_tx));
    let _stop_poll = tokio_util::task::AbortOnDropHandle::new(poll);
    let guarding = tokio::spawn(credentials_in_use::run(ctx.clone(), guard_checks));
    let _stop_guarding = tokio_util::task::AbortOnDropHandle::new(guarding);
    let wakes = tokio_stream::wrappers::ReceiverStream::new(wake_rx);
    let default_secret = ctx.default_credentials.clone();
    let secret_store = store.clone();
    let secret_ctx = ctx.clone();
    // A watch that lists again may have missed a deletion: the guard forgets what it saw.
    let relisted = |ctx: Arc<Context>| {
        move |event: &Result<watcher::Event<PartialObjectMeta<Secret>>, watcher::Error>| {
            if let Ok(watcher::Event::Init) = event {
                ctx.guard.relisted();
            }
        }
    };
    let secret_changes = watcher(secrets, watcher::Config::default().any_semantic())
        .default_backoff()
        .inspect(relisted(ctx.clone()))
        .touched_objects();
    // The default credentials Secret lives in the operator's namespace, which the watch
    // above misses when the operator watches another one.
    let default_elsewhere = ctx.default_credentials.as_ref().filter(|d| {
        config
            .namespace
            .as_ref()
            .is_some_and(|ns| *ns != d.namespace)
    });
    let default_changes = match default_elsewhere {
        Some(d) => {
            let api: Api<PartialObjectMeta<Secret>> =
                Api::namespaced(ctx.client.clone(), &d.namespace);
            let selector = format!("metadata.name={}", d.name);
            watcher(api, watcher::Config::default().fields(&selector))
                .default_backoff()
                .inspect(relisted(ctx.clone()))
                .touched_objects()
                .boxed()
        }
        None => futures::stream::pending().boxed(),
    };
    let secret_changes = futures::stream::select(secret_changes.boxed(), default_changes);
    // Any change of a budget (a new limit, a returned reservation, a turned window) may
    // make room: the objects of its namespace that wait for a budget try again.
    let budget_metrics = metrics.clone();
    let budgets_watched = budgets.clone();
    let budget_changes = watcher(budget_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .inspect(move |event| {
            budgets_watched.watched(event);
            if let Ok(watcher::Event::InitDone) = event {
                budget_metrics.readiness.synced(Cache::RentedHostBudgets);
            }
        })
        .modify(|b| b.metadata.managed_fields = None)
        .reflect(budget_cache)
        .touched_objects();
    let budget_store = store.clone();
    Controller::for_stream(triggers, store)
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency))
        .watches_stream(secret_changes, move |secret| {
            let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
            secret_ctx.credentials.forget(&namespace, &name);
            secret_ctx.guard.saw(&secret);
            let owner = secret
                .owner_references()
                .iter()
                .find(|o| o.kind == "RentedHost" && o.controller == Some(true))
                .map(|o| ObjectRef::<RentedHost>::new(&o.name).within(&namespace));
            match owner {
                // A connection Secret: its owner writes it again if someone else edited or
                // deleted it (the watch reports our own writes too).
                Some(owner) => {
                    let version = secret.resource_version();
                    let connections = &secret_ctx.connections;
                    let changed = connections.changed(&owner, version.as_deref());
                    changed.then_some(owner).into_iter().collect()
                }
                // Perhaps credentials: every object that reads them.
                None => users_of_secret(&secret_store, default_secret.as_ref(), &namespace, &name),
            }
        })
        .watches_stream(budget_changes, move |budget| {
            waiting_for_budget(&budget_store, &budget.namespace().unwrap_or_default())
        })
        .reconcile_on(wakes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile failed");
            }
        })
        .await;
    ctx.events.flush_at_shutdown().await;
}
