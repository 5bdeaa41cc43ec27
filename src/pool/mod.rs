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

use crate::api::{
    DeletionPolicy, POOL_LABEL, RentedHost, RentedHostPool, RentedHostPoolStatus, conditions_equal,
};
use crate::controller::Config;
use crate::metrics::Metrics;
use crate::readiness::Cache;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Field manager of pool status and of the children the pool creates.
pub const MANAGER: &str = "rentedhost-operator-pool";

/// A pool looked at again now and then, whatever the watches say.
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] Box<kube::Error>),
    #[error("this replica no longer leads; the leader carries on")]
    NotLeading,
}

impl Error {
    /// Bounded label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::NotLeading => "NotLeading",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

struct Context {
    client: Client,
    config: Config,
    leadership: crate::leader::Leadership,
    recorder: Recorder,
    /// Child names found taken by an object the pool does not control, per pool uid.
    foreign: Mutex<HashMap<String, HashSet<String>>>,
    /// Every RentedHost's name and owners.
    children: Store<PartialObjectMeta<RentedHost>>,
}

/// Runs the pool controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: Config,
    leadership: crate::leader::Leadership,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (pools, children): (Api<RentedHostPool>, Api<PartialObjectMeta<RentedHost>>) =
        match &config.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
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
            m.managed_fields_mut().clear();
            m.annotations_mut().clear();
            m.labels_mut().clear();
        })
        .reflect(writer)
        .touched_objects();
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: config.instance.clone(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        config,
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
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "pool reconcile failed");
            }
        })
        .await;
}

fn error_policy(pool: Arc<RentedHostPool>, error: &Error, _: Arc<Context>) -> Action {
    let reason = error.reason();
    match error {
        Error::NotLeading => Action::requeue(Duration::from_secs(5)),
        Error::Kube(_) => {
            tracing::warn!(namespace = pool.namespace(), name = pool.name_any(), reason, %error, "pool reconcile failed; retrying");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

fn controlled_by(child: &RentedHost, pool: &RentedHostPool) -> bool {
    let uid = pool.uid();
    child
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}

fn uncontrolled(obj: &RentedHost) -> bool {
    !obj.owner_references()
        .iter()
        .any(|o| o.controller == Some(true))
}

fn child(pool: &RentedHostPool, name: &str) -> RentedHost {
    let template = &pool.spec.template;
    let metadata = template.metadata.clone().unwrap_or_default();
    let mut labels = metadata.labels;
    labels.insert(POOL_LABEL.into(), pool.name_any());
    let mut spec = template.spec.clone();
    // Scaling down must release: the pool bills as many hosts as its replicas, whatever
    // the operator's default deletion policy.
    spec.deletion_policy = Some(DeletionPolicy::Delete);
    let mut obj = RentedHost::new(name, spec);
    obj.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: pool.namespace(),
        labels: Some(labels),
        annotations: (!metadata.annotations.is_empty()).then_some(metadata.annotations),
        owner_references: pool.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    };
    obj
}

async fn reconcile(cached: Arc<RentedHostPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leadership.is_leading() {
        return Err(Error::NotLeading);
    }
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let api: Api<RentedHost> = Api::namespaced(ctx.client.clone(), &ns);
    // The children first, then the pool: children the garbage collector took from a pool
    // deleted with `--cascade=orphan` are seen only after that pool's deletion is.
    // A list without a resourceVersion is served from etcd: a quorum read.
    let listed = api
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={name}")))
        .await?;
    // The pool as stored (a GET is a quorum read): its replicas decide what is billed.
    let pools: Api<RentedHostPool> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(pool) = pools.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if pool.uid() != cached.uid() || pool.metadata.deletion_timestamp.is_some() {
        // Deleting: the garbage collector deletes the children; each releases its host.
        return Ok(Action::await_change());
    }
    let pool_uid = pool.uid().unwrap_or_default();
    let default = ctx.config.default_deletion_policy;
    let mut children = Vec::new();
    let mut others = Vec::new();
    for item in listed.items {
        if controlled_by(&item, &pool) {
            children.push(item);
        } else if adoptable(&item, &pool, default) {
            match adopt(&api, &pool, &item).await? {
                Some(adopted) => children.push(adopted),
                None => others.push(item),
            }
        } else {
            others.push(item);
        }
    }
    // Children whose label was removed are still the pool's (and still billed): found by
    // their owner in the metadata cache, confirmed by a quorum read, labelled again.
    let listed: HashSet<String> = children.iter().map(|c| c.name_any()).collect();
    let strays: Vec<String> = ctx
        .children
        .state()
        .iter()
        .filter(|m| m.namespace().as_deref() == Some(ns.as_str()))
        .filter(|m| {
            m.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == pool_uid)
        })
        .map(|m| m.name_any())
        .filter(|n| !listed.contains(n))
        .collect();
    for stray in strays {
        if let Some(found) = reclaim(&api, &pool, &stray).await? {
            children.push(found);
        }
    }
    let mut taken: HashSet<String> = others.iter().map(|o| o.name_any()).collect();
    taken.extend(
        ctx.foreign
            .lock()
            .get(&pool_uid)
            .cloned()
            .unwrap_or_default(),
    );
    let plan = decision::scale(&pool, &children, &taken, default, jiff::Timestamp::now());

    // `kubectl scale` may have changed replicas since the read: neither create nor delete
    // on a stale one (20 → 5 → 20 would release hosts only to rent them again).
    let generation = pool.metadata.generation;
    let stale = || async {
        let current = pools.get_opt(&name).await?;
        Ok::<_, Error>(current.map(|p| p.metadata.generation) != Some(generation))
    };
    let replan = Action::requeue(Duration::from_millis(100));
    let mut created = Vec::new();
    if !plan.create.is_empty() && stale().await? {
        return Ok(replan);
    }
    for child_name in &plan.create {
        if !ctx.leadership.is_leading() {
            return Err(Error::NotLeading);
        }
        match api
            .create(&PostParams::default(), &child(&pool, child_name))
            .await
        {
            Ok(_) => created.push(child_name.clone()),
            // Ours already (another replica made it, or its label was removed): counted
            // next time. Anyone else's: never that name again.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                if reclaim(&api, &pool, child_name).await?.is_none() {
                    ctx.foreign
                        .lock()
                        .entry(pool_uid.clone())
                        .or_default()
                        .insert(child_name.clone());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut deleted = Vec::new();
    for (child_name, uid, version) in &plan.delete {
        if !ctx.leadership.is_leading() {
            return Err(Error::NotLeading);
        }
        // Each delete releases a host: each is checked against the pool as it is now.
        if stale().await? {
            return Ok(replan);
        }
        // Only the very child decided on, as it was seen: not a new one of the same name,
        // nor one that changed since (rented, paused).
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: Some(version.clone()),
            }),
            ..Default::default()
        };
        match api.delete(child_name, &params).await {
            Ok(_) => deleted.push(child_name.clone()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    write_status(&ctx, &pool, &plan.status).await?;
    let wanted = pool.spec.replicas;
    for (names, reason, verb) in [
        (&created, "ScaledUp", "created"),
        (&deleted, "ScaledDown", "deleted"),
    ] {
        if names.is_empty() {
            continue;
        }
        let note = format!("{verb} {} (wanted: {wanted})", names.join(", "));
        tracing::info!(namespace = ns, name, reason, "{note}");
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: "Scale".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &pool.object_ref(&())).await {
            tracing::debug!(%error, "publishing a pool event failed");
        }
    }
    Ok(Action::requeue(RESYNC))
}

/// Whether a labelled object without a controller may become the pool's child: one of its
/// names, renting its own host and releasing it when removed (adopting anything else would
/// let a scale-down drop a host, or count a host the pool cannot release).
fn adoptable(obj: &RentedHost, pool: &RentedHostPool, default: DeletionPolicy) -> bool {
    let named = obj
        .name_any()
        .strip_prefix(&format!("{}-", pool.name_any()))
        .is_some_and(|i| i.parse::<u32>().is_ok());
    uncontrolled(obj)
        && named
        && obj.metadata.deletion_timestamp.is_none()
        && obj.spec.deletion_policy_or(default) == DeletionPolicy::Delete
}

/// A child of the pool that its label list missed, by a quorum read: labelled again (a
/// guarded patch) unless it is being deleted. `None` if it is not the pool's.
async fn reclaim(
    api: &Api<RentedHost>,
    pool: &RentedHostPool,
    name: &str,
) -> Result<Option<RentedHost>, Error> {
    let Some(found) = api.get_opt(name).await? else {
        return Ok(None);
    };
    if !controlled_by(&found, pool) {
        return Ok(None);
    }
    if found.metadata.deletion_timestamp.is_some() {
        return Ok(Some(found));
    }
    let patch = serde_json::json!({"metadata": {
        "labels": {POOL_LABEL: pool.name_any()},
        "resourceVersion": found.resource_version(),
    }});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(labelled) => Ok(Some(labelled)),
        // Changed meanwhile: it is still the pool's, and counted as read.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some(found)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes the pool the controller of a child it labelled that lost its owner (the pool was
/// deleted with `--cascade=orphan` and applied again): a guarded patch, so that a child that
/// changed meanwhile is looked at again. `None` if it could not be adopted now.
async fn adopt(
    api: &Api<RentedHost>,
    pool: &RentedHostPool,
    orphan: &RentedHost,
) -> Result<Option<RentedHost>, Error> {
    let mut owners = orphan.owner_references().to_vec();
    owners.extend(pool.controller_owner_ref(&()));
    let patch = serde_json::json!({"metadata": {
        "ownerReferences": owners,
        "resourceVersion": orphan.resource_version(),
    }});
    match api
        .patch(
            &orphan.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(adopted) => {
            tracing::info!(
                namespace = pool.namespace(),
                name = pool.name_any(),
                child = orphan.name_any(),
                "adopted a child that had lost its pool"
            );
            Ok(Some(adopted))
        }
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn write_status(
    ctx: &Context,
    pool: &RentedHostPool,
    status: &RentedHostPoolStatus,
) -> Result<(), Error> {
    let before = pool.status.clone().unwrap_or_default();
    let strip = |s: &RentedHostPoolStatus| RentedHostPoolStatus {
        conditions: Vec::new(),
        ..s.clone()
    };
    if pool.status.is_some()
        && strip(&before) == strip(status)
        && conditions_equal(&before.conditions, &status.conditions)
    {
        return Ok(());
    }
    let api: Api<RentedHostPool> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHostPool",
        "status": status,
    });
    api.patch_status(
        &pool.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}
