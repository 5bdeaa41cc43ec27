//! The RentedHost controller: wiring (watches, predicates, the Secret watch), the shared
//! context, and the error type. The decision is in `decision`, its I/O in `reconcile`.

pub mod connections;
pub mod credentials;
pub mod credentials_in_use;
pub mod decision;
pub mod events;
pub mod foreign;
pub mod hosts;
pub mod journal;
pub mod poller;
pub mod prices;
pub mod reason;
mod reconcile;
pub mod resolution;
pub mod writes;

use crate::api::RentedHost;
use crate::metrics::Metrics;
use crate::provider::{ClientPool, ClientSettings};
use crate::readiness::Cache;
use credentials::SecretRef;
use futures::StreamExt;
use hosts::HostDirectory;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, Predicate, WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Controller settings: the flags of `run` (the defaults live here), and what `run` derives.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub provider: ClientSettings,
    /// The operator's credentials Secret, used by objects without `credentialsSecretRef`.
    #[arg(skip)]
    pub default_credentials: Option<SecretRef>,
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
    /// Multiplies every delay of the retry table (tests shorten it; 1.0 in production).
    #[arg(skip = 1.0)]
    pub retry_scale: f64,
    /// Deletion policy of objects that leave `spec.deletionPolicy` unset.
    #[arg(long, value_enum, ignore_case = true, default_value_t = crate::api::DeletionPolicy::Delete, env = "DEFAULT_DELETION_POLICY")]
    pub default_deletion_policy: crate::api::DeletionPolicy,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u16,
    /// Identity of this replica in events.
    #[arg(skip)]
    pub instance: Option<String>,
    /// Whether this replica may spend money now (it holds the lease, or runs alone).
    #[arg(skip = crate::leader::Leadership::always())]
    pub leadership: crate::leader::Leadership,
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

/// Errors of a reconcile that the reconciler could not turn into status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the object changed while it was being written; it is reconciled again")]
    Conflict,
    #[error("Kubernetes API error: {}", kube_message(.0))]
    Kube(#[source] Box<kube::Error>),
    /// Leadership lapsed: protocol writes and releases wait for the next leader.
    #[error("this replica no longer leads; the leader carries on")]
    NotLeading,
}

/// A Kubernetes error for people: the API server's own message, without kube's Debug dump of
/// the Status.
fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}

impl Error {
    pub fn from_kube(e: kube::Error) -> Error {
        match &e {
            kube::Error::Api(status) if status.code == 409 => Error::Conflict,
            _ => Error::Kube(Box::new(e)),
        }
    }

    /// Bounded label for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Conflict => "Conflict",
            Error::Kube(_) => "KubernetesApiError",
            Error::NotLeading => "NotLeading",
        }
    }
}

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub providers: ClientPool,
    pub hosts: Arc<HostDirectory>,
    pub poller: Arc<poller::Poller>,
    /// Each account's package list, for `status.price`.
    pub prices: prices::PriceList,
    pub store: Store<RentedHost>,
    /// Events, published off the reconcile's path.
    pub events: events::EventQueue,
    pub metrics: Arc<Metrics>,
    /// Reports provider calls to the metrics.
    pub observer: crate::provider::CallObserver,
    /// The finalizer of the credentials Secrets objects still need.
    pub guard: credentials_in_use::Guard,
    /// When this process started (hosts older than that were there before it looked).
    pub started: jiff::Timestamp,
    /// Brings objects back whose wait another object's change ends (a host's claim).
    pub wake: tokio::sync::mpsc::Sender<ObjectRef<RentedHost>>,
    attempts: reason::Attempts,
    /// No createRent before this instant for this (uid, generation): a backoff holds even
    /// when another trigger reconciles the object first.
    hold: Mutex<HashMap<String, (Option<i64>, std::time::Instant)>>,
    /// Creates of a pool's children held after a refusal every sibling would meet: the pool
    /// (uid), until when, and the child (uid) that tries again first.
    pool_holds: Mutex<HashMap<String, (std::time::Instant, String)>>,
    /// Host ids this process assigned, until the store shows them: the object (key) and
    /// when the id was learned.
    claims: Mutex<HashMap<String, (String, std::time::Instant)>>,
    /// Host ids createRent answered this process, per object (uid) and pending create
    /// (`since`), until they are written: the object's host, whatever pairing would say.
    answers: Mutex<HashMap<String, (String, String)>>,
    /// Objects (uid) whose `lastRebootRequest` the protocol's manager owns (see
    /// `writes::share_reboot_record`).
    reboot_records: Mutex<HashSet<String>>,
    /// Credentials read from Secrets, dropped when the Secret changes.
    credentials: Mutex<HashMap<(String, String), crate::provider::Credentials>>,
}

/// The pool (uid) that controls `obj`, if one does.
fn pool_of(obj: &RentedHost) -> Option<String> {
    obj.owner_references()
        .iter()
        .find(|o| o.kind == "RentedHostPool" && o.controller == Some(true))
        .map(|o| o.uid.clone())
}

pub(crate) fn object_key(obj: &RentedHost) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

impl Context {
    /// Host ids this process learned for objects other than `obj` (until they are
    /// written), with the object (`namespace/name`) each is for.
    pub fn claims_of_others(&self, obj: &RentedHost) -> Vec<(String, String)> {
        let me = object_key(obj);
        let claims = self.claims.lock();
        claims
            .iter()
            .filter(|(_, (k, _))| **k != me)
            .map(|(id, (k, _))| (id.clone(), k.clone()))
            .collect()
    }

    pub fn claim(&self, obj: &RentedHost, id: &str) {
        self.claims
            .lock()
            .insert(id.to_string(), (object_key(obj), std::time::Instant::now()));
    }

    /// Records that createRent answered host `id` for the pending create `since` of `obj`.
    pub fn answered(&self, obj: &RentedHost, since: &str, id: &str) {
        self.claim(obj, id);
        self.answers.lock().insert(
            obj.uid().unwrap_or_default(),
            (since.to_string(), id.to_string()),
        );
    }

    /// The host createRent answered for the object's current pending create, if this
    /// process got that answer.
    pub fn answer_for(&self, obj: &RentedHost) -> Option<String> {
        let since = obj.status.as_ref()?.create_pending.as_ref()?.since.clone();
        let answers = self.answers.lock();
        let (asked, id) = answers.get(&obj.uid().unwrap_or_default())?;
        (*asked == since).then(|| id.clone())
    }

    /// Forgets every claim and answer of an object that is gone.
    pub fn forget_object(&self, obj: &RentedHost) {
        let me = object_key(obj);
        self.claims.lock().retain(|_, (k, _)| *k != me);
        self.answers.lock().remove(&obj.uid().unwrap_or_default());
        self.reboot_records
            .lock()
            .remove(&obj.uid().unwrap_or_default());
    }

    /// When this process learned host id `id` (it rented or adopted it), if it did.
    pub fn learned_at(&self, id: &str) -> Option<std::time::Instant> {
        let claims = self.claims.lock();
        claims.get(id).map(|(_, at)| *at)
    }

    /// The credentials in a Secret, read once and kept until the Secret changes.
    pub async fn credentials(
        &self,
        secret: &SecretRef,
    ) -> Result<crate::provider::Credentials, credentials::Problem> {
        let key = (secret.namespace.clone(), secret.name.clone());
        if let Some(c) = self.credentials.lock().get(&key) {
            return Ok(c.clone());
        }
        let loaded = credentials::load(&self.client, secret).await?;
        self.credentials.lock().insert(key, loaded.clone());
        Ok(loaded)
    }

    fn forget_credentials(&self, namespace: &str, name: &str) {
        let mut cache = self.credentials.lock();
        cache.remove(&(namespace.to_string(), name.to_string()));
    }

    /// Whether `obj` records a reboot its older operator's status manager may own alone.
    pub fn needs_reboot_record_shared(&self, obj: &RentedHost) -> bool {
        let recorded = obj
            .status
            .as_ref()
            .is_some_and(|s| s.last_reboot_request.is_some());
        recorded
            && !self
                .reboot_records
                .lock()
                .contains(&obj.uid().unwrap_or_default())
    }

    /// The protocol's manager owns `obj`'s `lastRebootRequest` (it wrote or shared it).
    pub fn reboot_record_shared(&self, obj: &RentedHost) {
        self.reboot_records
            .lock()
            .insert(obj.uid().unwrap_or_default());
    }

    /// Every host id an object holds or names (the cache), or this process learned.
    pub fn every_claim(&self) -> HashSet<String> {
        let mut ids: HashSet<String> = self.claims.lock().keys().cloned().collect();
        for obj in self.store.state() {
            let status = obj.status.as_ref().and_then(|s| s.host_id.clone());
            ids.extend(status.into_iter().chain(obj.spec.host_id.clone()));
        }
        ids
    }

    /// Brings back the objects whose `spec.hostId` names a host `obj` claimed, now that
    /// its claim is over (one of them may have it now).
    pub fn wake_claimants_of(&self, obj: &RentedHost) {
        let me = ObjectRef::from_obj(obj);
        let ids: Vec<&str> = [
            obj.status.as_ref().and_then(|s| s.host_id.as_deref()),
            obj.spec.host_id.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        for other in self.store.state() {
            let asks = other
                .spec
                .host_id
                .as_deref()
                .is_some_and(|id| ids.contains(&id));
            let reference = ObjectRef::from_obj(&*other);
            if asks && reference != me {
                // A full channel only delays it: the refusal is retried on its own too.
                let _ = self.wake.try_send(reference);
            }
        }
    }

    pub fn release_claim(&self, id: &str) {
        self.claims.lock().remove(id);
    }

    /// The next retry attempt number for an object and reason (0 first), counting it.
    pub fn next_attempt(&self, obj: &RentedHost, reason: reason::Reason) -> u32 {
        self.attempts.next(&obj.uid().unwrap_or_default(), reason)
    }

    pub fn reset_attempts(&self, obj: &RentedHost) {
        let uid = obj.uid().unwrap_or_default();
        self.attempts.reset(&uid);
        self.hold.lock().remove(&uid);
    }

    /// Holds creates for this object's generation until `until`.
    pub fn hold_creates(&self, obj: &RentedHost, until: std::time::Instant) {
        let mut hold = self.hold.lock();
        hold.insert(
            obj.uid().unwrap_or_default(),
            (obj.metadata.generation, until),
        );
    }

    /// Holds the creates of `obj`'s pool siblings until `until`; `obj` tries first.
    pub fn hold_pool(&self, obj: &RentedHost, until: std::time::Instant) {
        if let Some(pool) = pool_of(obj) {
            let me = obj.uid().unwrap_or_default();
            self.pool_holds.lock().insert(pool, (until, me));
        }
    }

    /// Ends the hold of `obj`'s pool (a create of the pool succeeded).
    pub fn release_pool(&self, obj: &RentedHost) {
        if let Some(pool) = pool_of(obj) {
            self.pool_holds.lock().remove(&pool);
        }
    }

    /// How long `obj` waits for a sibling that tries first: past the hold, plus the time
    /// that sibling's create may take (it extends the hold if refused again, ends it if not).
    pub fn pool_held_for(&self, obj: &RentedHost) -> Option<Duration> {
        let pool = pool_of(obj)?;
        let holds = self.pool_holds.lock();
        let (until, first) = holds.get(&pool)?;
        if *first == obj.uid().unwrap_or_default() {
            return None;
        }
        let end = *until + self.config.provider.timeout * 2;
        end.checked_duration_since(std::time::Instant::now())
    }

    /// How long creates are still held for this object at its generation.
    pub fn create_held_for(&self, obj: &RentedHost) -> Option<Duration> {
        let hold = self.hold.lock();
        let (generation, until) = hold.get(&obj.uid().unwrap_or_default())?;
        let left = until.checked_duration_since(std::time::Instant::now())?;
        (*generation == obj.metadata.generation).then_some(left)
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

/// Runs the controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<RentedHost> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let secrets: Api<PartialObjectMeta<Secret>> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
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
        // Nothing reads managedFields, which are most of an object's size.
        .modify(|obj| obj.managed_fields_mut().clear())
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
    let took_over = config.leadership.took_over();
    let (guard, guard_checks) = credentials_in_use::Guard::new(config.provider.timeout, took_over);
    let ctx = Arc::new(Context {
        guard,
        wake: wake_tx.clone(),
        started: jiff::Timestamp::now(),
        events: events::EventQueue::start(&client, &reporter),
        client,
        providers: ClientPool::default(),
        hosts: Arc::new(HostDirectory::default()),
        poller: Arc::new(poller::Poller::default()),
        prices: prices::PriceList::default(),
        store: store.clone(),
        observer: metrics.provider_observer(),
        metrics: metrics.clone(),
        attempts: reason::Attempts::default(),
        hold: Mutex::default(),
        pool_holds: Mutex::default(),
        claims: Mutex::default(),
        answers: Mutex::default(),
        reboot_records: Mutex::default(),
        credentials: Mutex::default(),
        config: config.clone(),
    });
    let _ = metrics.store.set(store.clone());
    // The poller ends with the controller.
    let poll = tokio::spawn(poller::run(ctx.clone(), wake_tx));
    let _stop_poll = tokio_util::task::AbortOnDropHandle::new(poll);
    let guarding = tokio::spawn(credentials_in_use::run(ctx.clone(), guard_checks));
    let _stop_guarding = tokio_util::task::AbortOnDropHandle::new(guarding);
    let wakes = tokio_stream::wrappers::ReceiverStream::new(wake_rx);
    let default_secret = config.default_credentials.clone();
    let secret_store = store.clone();
    let secret_ctx = ctx.clone();
    let secret_changes = watcher(secrets, watcher::Config::default().any_semantic())
        .default_backoff()
        .touched_objects();
    // The default credentials Secret lives in the operator's namespace, which the watch
    // above misses when the operator watches another one.
    let default_elsewhere = config.default_credentials.as_ref().filter(|d| {
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
                .touched_objects()
                .boxed()
        }
        None => futures::stream::pending().boxed(),
    };
    let secret_changes = futures::stream::select(secret_changes.boxed(), default_changes);
    Controller::for_stream(triggers, store)
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency))
        .watches_stream(secret_changes, move |secret| {
            let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
            secret_ctx.forget_credentials(&namespace, &name);
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
                    let connections = &secret_ctx.poller.connections;
                    let changed = connections.changed(&owner, version.as_deref());
                    changed.then_some(owner).into_iter().collect()
                }
                // Perhaps credentials: every object that reads them.
                None => users_of_secret(&secret_store, default_secret.as_ref(), &namespace, &name),
            }
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
    // What the last reconciles said reaches the objects before the process ends.
    let flushed = tokio::time::timeout(Duration::from_secs(5), ctx.events.flush()).await;
    if flushed.is_err() {
        tracing::warn!("some events were not published before shutdown");
    }
}
