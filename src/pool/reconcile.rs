//! The pool's I/O around its decision: a quorum list of the children and a quorum read of
//! the pool, adoption and relabelling, the creates and deletes the decision asks for (each
//! checked against the pool as it is now), status and events.

use super::decision::{self, Listed};
use crate::api::{DeletionPolicy, POOL_LABEL, RentedHost, RentedHostPool};
use crate::kit::events::EventQueue;
use crate::kit::{self, Error, status};
use crate::leader::Leadership;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Field manager of pool status and of the children the pool creates.
pub const MANAGER: &str = "rentedhost-operator-pool";

/// A pool looked at again now and then, whatever the watches say.
const RESYNC: Duration = Duration::from_secs(300);

pub(super) struct Context {
    pub client: Client,
    /// Deletion policy of objects that leave `spec.deletionPolicy` unset.
    pub default_deletion_policy: DeletionPolicy,
    pub leadership: Leadership,
    pub events: EventQueue,
    /// Child names found taken by an object the pool does not control, per pool uid.
    pub foreign: Mutex<HashMap<String, HashSet<String>>>,
    /// Every RentedHost's name and owners.
    pub children: Store<PartialObjectMeta<RentedHost>>,
}

pub(super) fn error_policy(pool: Arc<RentedHostPool>, error: &Error, _: Arc<Context>) -> Action {
    if let Some(wait) = error.routine_retry() {
        return Action::requeue(wait);
    }
    let reason = error.reason();
    tracing::warn!(namespace = pool.namespace(), name = pool.name_any(), reason, %error, "pool reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

pub(super) async fn reconcile(
    cached: Arc<RentedHostPool>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if !ctx.leadership.is_leading() {
        return Err(Error::NotLeading);
    }
    let api: Api<RentedHost> = kit::beside(&ctx.client, &*cached);
    let pools: Api<RentedHostPool> = kit::beside(&ctx.client, &*cached);
    // The children first, then the pool: children the garbage collector took from a pool
    // deleted with `--cascade=orphan` are seen only after that pool's deletion is.
    // A list without a resourceVersion is served from etcd: a quorum read.
    let selector = format!("{POOL_LABEL}={}", cached.name_any());
    let listed = api.list(&ListParams::default().labels(&selector)).await?;
    // The pool as stored (a GET is a quorum read): its replicas decide what is billed.
    let Some(pool) = pools.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if pool.uid() != cached.uid() || pool.metadata.deletion_timestamp.is_some() {
        // Deleting: the garbage collector deletes the children; each releases its host.
        return Ok(Action::await_change());
    }
    let (children, taken) = children_of(&ctx, &api, &pool, listed.items).await?;
    let default = ctx.default_deletion_policy;
    let plan = decision::scale(&pool, &children, &taken, default, jiff::Timestamp::now());
    // `kubectl scale` may have changed replicas since the read: neither create nor delete
    // on a stale one (20 → 5 → 20 would release hosts only to rent them again).
    let replan = Action::requeue(Duration::from_millis(100));
    let stale = || async {
        let current = pools.get_opt(&pool.name_any()).await?;
        let generation = current.map(|p| p.metadata.generation);
        Ok::<_, Error>(generation != Some(pool.metadata.generation))
    };
    if !plan.create.is_empty() && stale().await? {
        return Ok(replan);
    }
    let created = create(&ctx, &api, &pool, &plan.create).await?;
    let mut deleted = Vec::new();
    for (child_name, uid, version) in &plan.delete {
        if !ctx.leadership.is_leading() {
            return Err(Error::NotLeading);
        }
        // Each delete releases a host: each is checked against the pool as it is now.
        if stale().await? {
            return Ok(replan);
        }
        if delete(&api, child_name, uid, version).await? {
            deleted.push(child_name.clone());
        }
    }
    if status::changed(pool.status.as_ref(), &plan.status) {
        status::apply(&pools, &pool, MANAGER, &plan.status).await?;
    }
    tell(&ctx, &pool, &created, &deleted).await;
    Ok(Action::requeue(RESYNC))
}

/// The pool's children among the objects its label lists (orphans adopted, strays whose
/// label was removed found again), and the names children cannot have.
async fn children_of(
    ctx: &Context,
    api: &Api<RentedHost>,
    pool: &RentedHostPool,
    listed: Vec<RentedHost>,
) -> Result<(Vec<RentedHost>, HashSet<String>), Error> {
    let mut children = Vec::new();
    let mut others = Vec::new();
    for item in decision::sort(pool, listed, ctx.default_deletion_policy) {
        match item {
            Listed::Child(child) => children.push(child),
            Listed::Orphan(orphan) => match adopt(api, pool, &orphan).await? {
                Some(adopted) => children.push(adopted),
                None => others.push(orphan),
            },
            Listed::Other(other) => others.push(other),
        }
    }
    // Children whose label was removed are still the pool's (and still billed): found by
    // their owner in the metadata cache, confirmed by a quorum read, labelled again.
    let cached = ctx.children.state();
    let strays = decision::strays(pool, cached.iter().map(|m| &**m), &children);
    for stray in strays {
        if let Some(found) = reclaim(api, pool, &stray).await? {
            children.push(found);
        }
    }
    let mut taken: HashSet<String> = others.iter().map(|o| o.name_any()).collect();
    let foreign = ctx.foreign.lock();
    taken.extend(
        foreign
            .get(&pool.uid().unwrap_or_default())
            .into_iter()
            .flatten()
            .cloned(),
    );
    Ok((children, taken))
}

/// Creates the children named; those created.
async fn create(
    ctx: &Context,
    api: &Api<RentedHost>,
    pool: &RentedHostPool,
    names: &[String],
) -> Result<Vec<String>, Error> {
    let mut created = Vec::new();
    for child_name in names {
        if !ctx.leadership.is_leading() {
            return Err(Error::NotLeading);
        }
        let child = decision::child(pool, child_name);
        match api.create(&PostParams::default(), &child).await {
            Ok(_) => created.push(child_name.clone()),
            // Ours already (another replica made it, or its label was removed): counted
            // next time. Anyone else's: never that name again.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                if reclaim(api, pool, child_name).await?.is_none() {
                    let uid = pool.uid().unwrap_or_default();
                    let mut foreign = ctx.foreign.lock();
                    foreign.entry(uid).or_default().insert(child_name.clone());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(created)
}

/// Deletes the very child decided on, as it was seen: not a new one of the same name, nor
/// one that changed since (rented, paused). Whether it was deleted.
async fn delete(
    api: &Api<RentedHost>,
    name: &str,
    uid: &str,
    version: &str,
) -> Result<bool, Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: Some(version.to_string()),
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Says what scaling did: a log line and an event on the pool.
async fn tell(ctx: &Context, pool: &RentedHostPool, created: &[String], deleted: &[String]) {
    let (ns, name) = (pool.namespace().unwrap_or_default(), pool.name_any());
    let wanted = pool.spec.replicas;
    for (names, reason, verb) in [
        (created, "ScaledUp", "created"),
        (deleted, "ScaledDown", "deleted"),
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
        ctx.events.publish(pool, event).await;
    }
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
    if !decision::controlled_by(&found, pool) {
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
