//! The finalizer `xuandashi.dev/credentials-in-use` on credentials Secrets, as
//! kubernetes.io/pvc-protection keeps a claim a pod uses, and Crossplane a ProviderConfig
//! in use: while an object needs the provider through a Secret (a host to release under
//! `Delete`, a pending create to settle), deleting the Secret, or its namespace, leaves it
//! Terminating with its data until no such object is left. The operator adds the finalizer
//! before it spends through the Secret, and removes it as soon as a quorum list shows that
//! nobody needs it, whether the Secret is being deleted or not: `helm uninstall` removes the
//! operator (its RBAC, its pod) before the Secret, so a finalizer left for the deletion to
//! remove would never go.
//!
//! No new create is made with a Secret that is being deleted or is not protected. A create
//! reads the Secret (protecting it) and writes its `createPending` while holding the
//! Secret's lock for reading ([`Guard::creating`]), within [`Guard::create_window`]; the
//! finalizer is removed under the lock for writing, so a create of this process that read
//! the Secret has its pending create in the list. A create of the replica that led before
//! ended within its window of its read, which was before this replica led: unless that
//! replica let the lease go (its calls all ended), nothing is removed until this replica
//! has led for twice that window.

use super::credentials::{self, SecretRef};
use super::decision::has_finalizer;
use super::{Context, Error};
use crate::api::RentedHost;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The finalizer that keeps a credentials Secret while objects need it.
pub const FINALIZER: &str = "xuandashi.dev/credentials-in-use";

/// How often a Secret that carries the finalizer is looked at again, whatever else happens
/// (an object switched to `Orphan`, or a create that failed, stops needing it without
/// being deleted).
const RECHECK: Duration = Duration::from_secs(30);

/// Whether `obj` may need the provider through its credentials: it holds the operator's
/// finalizer and has a pending create to settle or a host. A host kept on deletion
/// (`Orphan`, `ObserveOnly`) counts too: a person may switch the object to `Delete` while
/// the operator is down, and the namespace go before it looks again. (An object that has
/// neither checks the Secret when it creates.)
pub fn needs_credentials(obj: &RentedHost) -> bool {
    let status = obj.status.as_ref();
    let pending = status.is_some_and(|s| s.create_pending.is_some());
    let host = status
        .and_then(|s| s.host_id.as_deref())
        .is_some_and(|id| !id.trim().is_empty());
    has_finalizer(obj) && (pending || host)
}

/// A Secret as a read found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It carries the finalizer and is not being deleted.
    Protected,
    /// It is being deleted: it may serve what is under way, never a new create.
    Terminating,
    /// It is not there.
    Gone,
}

/// A Secret by namespace and name.
type Key = (String, String);

/// The Secrets this process protects, and their locks.
pub struct Guard {
    /// Each Secret's standing as last read or written (for objects that need it).
    seen: Mutex<HashMap<Key, Standing>>,
    /// One read at a time per Secret.
    reading: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Per Secret: creates read it and record themselves under the lock for reading; its
    /// finalizer is removed under the lock for writing.
    using: Mutex<HashMap<Key, Arc<tokio::sync::RwLock<()>>>>,
    /// Secrets known to carry the finalizer: looked at by [`run`].
    held: Mutex<HashSet<Key>>,
    check: mpsc::UnboundedSender<Key>,
    /// The longest a create's read of its Secret and its `createPending` write may take.
    window: Duration,
    /// Nothing is removed before this: the replica that led before may have a create
    /// under way until then (the guard lives as long as this replica's leadership).
    settled: Instant,
}

fn key(secret: &SecretRef) -> Key {
    (secret.namespace.clone(), secret.name.clone())
}

impl Guard {
    /// A guard whose creates read and record within `window`, for a leadership that may
    /// have followed one whose calls are still under way (`took_over`).
    pub fn new(window: Duration, took_over: bool) -> (Guard, mpsc::UnboundedReceiver<Key>) {
        let settle = if took_over {
            window * 2
        } else {
            Duration::ZERO
        };
        let (check, checks) = mpsc::unbounded_channel();
        let guard = Guard {
            seen: Mutex::default(),
            reading: Mutex::default(),
            using: Mutex::default(),
            held: Mutex::default(),
            check,
            window,
            settled: Instant::now() + settle,
        };
        (guard, checks)
    }

    /// The longest a create may take from its read of the Secret to its recorded
    /// `createPending`: past it, the create is abandoned before anything is sent.
    pub fn create_window(&self) -> Duration {
        self.window
    }

    /// Holds a create's use of `secret`, from its read to its `createPending` write: the
    /// finalizer is not removed meanwhile.
    pub async fn creating(&self, secret: &SecretRef) -> tokio::sync::OwnedRwLockReadGuard<()> {
        let lock = self.using.lock().entry(key(secret)).or_default().clone();
        lock.read_owned().await
    }

    /// What the Secret watch shows of a Secret (its metadata).
    pub fn saw(&self, secret: &PartialObjectMeta<Secret>) {
        let key = (secret.namespace().unwrap_or_default(), secret.name_any());
        let ours = secret.finalizers().iter().any(|f| f == FINALIZER);
        let deleting = secret.metadata.deletion_timestamp.is_some();
        match (ours, deleting) {
            (_, true) => {
                self.seen.lock().insert(key.clone(), Standing::Terminating);
            }
            (true, false) => {}
            (false, false) => {
                self.seen.lock().remove(&key);
            }
        }
        match ours {
            true => self.hold(&key, deleting),
            false => {
                self.held.lock().remove(&key);
            }
        }
    }

    /// Notes that the Secret carries the finalizer; a Secret being deleted is looked at now.
    fn hold(&self, key: &Key, deleting: bool) {
        self.held.lock().insert(key.clone());
        if deleting {
            let _ = self.check.send(key.clone());
        }
    }

    /// The Secret is gone from the cluster, or no longer carries the finalizer.
    pub fn gone(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        self.seen.lock().remove(&key);
        self.held.lock().remove(&key);
    }

    /// An object that needed `secret` no longer does (it went, or holds no host): the
    /// Secret may be free now.
    pub fn released(&self, secret: &SecretRef) {
        let _ = self.check.send(key(secret));
    }

    /// Makes sure `secret` carries the finalizer, from what this process knows of it.
    pub async fn protect(
        &self,
        client: &kube::Client,
        secret: &SecretRef,
    ) -> Result<Standing, Error> {
        // The finalizer is not removed meanwhile: a removal's list, after this, shows the
        // object this protects for; a removal before it cleared `seen` first.
        let _using = self.creating(secret).await;
        let key = key(secret);
        if let Some(standing) = self.seen.lock().get(&key) {
            return Ok(*standing);
        }
        let lock = self.reading.lock().entry(key.clone()).or_default().clone();
        let _reading = lock.lock().await;
        if let Some(standing) = self.seen.lock().get(&key) {
            return Ok(*standing);
        }
        let standing = self.read(client, secret).await?;
        self.seen.lock().insert(key, standing);
        Ok(standing)
    }

    /// What a create goes by (within [`Guard::create_window`] of its `createPending`
    /// write, holding [`Guard::creating`]): `Protected` as this leadership read it, while
    /// the Secret watch shows the finalizer and no deletion (a removal, under the lock this
    /// create holds, forgets it first); otherwise a read made now, which protects it. So
    /// creates cost no read each, and one whose view of a deletion lags the watch still
    /// records its `createPending` before any removal's quorum list.
    pub async fn for_create(
        &self,
        client: &kube::Client,
        secret: &SecretRef,
    ) -> Result<Standing, Error> {
        let key = key(secret);
        let known = self.seen.lock().get(&key).copied();
        if known == Some(Standing::Protected) && self.held.lock().contains(&key) {
            return Ok(Standing::Protected);
        }
        let standing = self.read(client, secret).await?;
        // A deletion the watch reported meanwhile stays: this read may predate it.
        self.seen.lock().entry(key).or_insert(standing);
        Ok(standing)
    }

    /// The Secret watch listed again (it restarted): what it reported before may have
    /// missed a change (a deletion while it was away reports nothing), so every create
    /// reads its Secret again until it has.
    pub fn relisted(&self) {
        self.seen.lock().clear();
    }

    /// The Secret's standing by a read made now, protected first if it is not yet.
    pub async fn read(&self, client: &kube::Client, secret: &SecretRef) -> Result<Standing, Error> {
        let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
        let found = api
            .get_metadata_opt(&secret.name)
            .await
            .map_err(Error::from_kube)?;
        Ok(match found {
            None => Standing::Gone,
            Some(found) if found.metadata.deletion_timestamp.is_some() => {
                if found.finalizers().iter().any(|f| f == FINALIZER) {
                    self.hold(&key(secret), true);
                }
                Standing::Terminating
            }
            Some(found) if found.finalizers().iter().any(|f| f == FINALIZER) => {
                self.hold(&key(secret), false);
                Standing::Protected
            }
            Some(found) => {
                add_finalizer(client, &found).await?;
                self.hold(&key(secret), false);
                tracing::info!(secret = %format!("{}/{}", secret.namespace, secret.name), "credentials Secret protected: it stays until no object needs it");
                Standing::Protected
            }
        })
    }
}

/// Adds the finalizer to a Secret, guarded by the version read.
async fn add_finalizer(
    client: &kube::Client,
    secret: &PartialObjectMeta<Secret>,
) -> Result<(), Error> {
    let mut finalizers = secret.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    patch_finalizers(client, secret, finalizers).await
}

async fn patch_finalizers(
    client: &kube::Client,
    secret: &PartialObjectMeta<Secret>,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": secret.resource_version(),
    }});
    api.patch_metadata(
        &secret.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::from_kube)?;
    Ok(())
}

/// Whether an object in the cache needs `secret`: a cheap answer that may be stale, so
/// only "yes" is believed (a Secret in use stays so for a while: it is looked at again).
fn in_use_cached(ctx: &Context, secret: &SecretRef) -> bool {
    let default = ctx.default_credentials.as_ref();
    ctx.store.state().iter().any(|o| {
        credentials::secret_ref(o, default).is_some_and(|r| r.is(&secret.namespace, &secret.name))
            && needs_credentials(o)
    })
}

/// Whether any object may still need `secret` (a quorum list of the objects that can name
/// it: its namespace's, or every watched one's for the operator's default Secret).
async fn in_use(ctx: &Context, secret: &SecretRef) -> Result<bool, Error> {
    let default = ctx.default_credentials.as_ref();
    let is_default = default.is_some_and(|d| d == secret);
    let api: Api<RentedHost> = match (&ctx.config.namespace, is_default) {
        (ns, true) => crate::kit::scoped(&ctx.client, ns.as_deref()),
        (_, false) => Api::namespaced(ctx.client.clone(), &secret.namespace),
    };
    let objects = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(Error::from_kube)?;
    Ok(objects.items.iter().any(|o| {
        credentials::secret_ref(o, default).is_some_and(|r| r.is(&secret.namespace, &secret.name))
            && needs_credentials(o)
    }))
}

/// Removes the finalizer of a Secret once nobody needs it (else it is looked at again).
/// `routine` (the periodic look) first asks the cache, which may lag behind a change that
/// asked for this look (an object just finalized is still in it).
async fn release_if_unused(
    ctx: &Context,
    namespace: &str,
    name: &str,
    routine: bool,
) -> Result<(), Error> {
    // The default Secret's keys do not matter here: `is` compares namespace and name.
    let secret = match ctx.default_credentials.as_ref() {
        Some(d) if d.is(namespace, name) => d.clone(),
        _ => SecretRef::new(namespace, name),
    };
    if routine && in_use_cached(ctx, &secret) {
        return Ok(());
    }
    // A create of the replica that led before read the Secret before this one led, and
    // recorded itself or gave up within its window.
    let key = (namespace.to_string(), name.to_string());
    if let Some(left) = ctx.guard.settled.checked_duration_since(Instant::now()) {
        let check = ctx.guard.check.clone();
        tokio::spawn(async move {
            tokio::time::sleep(left).await;
            let _ = check.send(key);
        });
        return Ok(());
    }
    // No create of this process between its read of the Secret and its record.
    let lock = ctx
        .guard
        .using
        .lock()
        .entry(key.clone())
        .or_default()
        .clone();
    let _removing = lock.write().await;
    // From here `protect` reads the Secret again (and adds the finalizer back if it went).
    ctx.guard.seen.lock().remove(&key);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let found = api.get_metadata_opt(name).await.map_err(Error::from_kube)?;
    let Some(found) = found.filter(|f| f.finalizers().iter().any(|f| f == FINALIZER)) else {
        // Nothing to remove; the next create protects it again.
        ctx.guard.gone(namespace, name);
        return Ok(());
    };
    if !ctx.leadership.is_leading() || in_use(ctx, &secret).await? {
        return Ok(());
    }
    let rest: Vec<String> = found
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    match patch_finalizers(&ctx.client, &found, rest).await {
        Ok(()) => {
            // The next create protects it again.
            ctx.guard.gone(namespace, name);
            tracing::info!(secret = %format!("{namespace}/{name}"), "credentials Secret no longer needed by any object: no longer protected");
            Ok(())
        }
        // Changed since the read: looked at again.
        Err(Error::Conflict) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Looks at a Secret when asked (the Secret watch, an object finalized) and at every Secret
/// that carries the finalizer every [`RECHECK`], until the controller ends.
pub async fn run(ctx: Arc<Context>, mut checks: mpsc::UnboundedReceiver<Key>) {
    let mut tick = tokio::time::interval(RECHECK);
    loop {
        let (due, routine): (Vec<Key>, bool) = tokio::select! {
            asked = checks.recv() => match asked {
                Some(key) => (vec![key], false),
                None => return,
            },
            _ = tick.tick() => (ctx.guard.held.lock().iter().cloned().collect(), true),
        };
        for (namespace, name) in due {
            match release_if_unused(&ctx, &namespace, &name, routine).await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(secret = %format!("{namespace}/{name}"), %error, "checking whether a credentials Secret is still needed failed; retrying")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FINALIZER as RELEASE, ManagementPolicy};
    use crate::controller::decision::testing::*;
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn an_object_needs_its_credentials_while_it_has_a_pending_create_or_a_host() {
        assert!(
            !needs_credentials(&obj(None)),
            "it checks them when it creates"
        );
        assert!(needs_credentials(&obj(Some(pending(&obj(None))))));
        let mut unfinalized = obj(Some(pending(&obj(None))));
        unfinalized.metadata.finalizers = None;
        assert!(
            !needs_credentials(&unfinalized),
            "nothing of ours to finish"
        );
        let rented = with_host("h1", None);
        assert!(needs_credentials(&rented), "a host to release");
        // Kept on deletion today, but a person may switch either to Delete while the
        // operator is down.
        let mut orphaned = with_host("h1", None);
        orphaned.spec.deletion_policy = Some(crate::api::DeletionPolicy::Orphan);
        assert!(needs_credentials(&orphaned), "Orphan: still a host");
        let mut observed = with_host("h1", None);
        observed.spec.management_policy = ManagementPolicy::ObserveOnly;
        assert!(needs_credentials(&observed), "ObserveOnly: still a host");
        let mut releasing = with_host("h1", None);
        releasing.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(needs_credentials(&releasing));
        assert!(releasing.finalizers().iter().any(|f| f == RELEASE));
    }
}
