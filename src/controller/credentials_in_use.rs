//! The finalizer `xuandashi.dev/credentials-in-use` on credentials Secrets, as
//! kubernetes.io/pvc-protection keeps a claim a pod uses, and Crossplane a ProviderConfig
//! in use: while an object may still need the provider through a Secret (a host to release
//! under `Delete`, a pending create to settle, a create to make), deleting the Secret, or
//! its namespace, leaves it Terminating with its data until no such object is left. The
//! operator adds the finalizer before it spends through the Secret, and removes it only
//! once the Secret is being deleted and a quorum list shows that nobody needs it.
//!
//! No new create is made with a Secret that is being deleted: the check is a read started
//! after the object's own finalizer was written, so that a removal decided on a list that
//! missed the object can never leave a create behind it.

use super::credentials::{self, SecretRef};
use super::decision::{has_finalizer, release_needed};
use super::{Context, Error};
use crate::api::{DeletionPolicy, RentedHost};
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

/// How often a Secret that is being deleted is looked at again, whatever else happens (an
/// object switched to `Orphan`, say, stops needing it without being deleted).
const RECHECK: Duration = Duration::from_secs(30);

/// Whether `obj` may still reach the provider through its credentials: it holds the
/// operator's finalizer and has a pending create, a host to release, or may rent one.
pub fn needs_credentials(obj: &RentedHost, default: DeletionPolicy) -> bool {
    let status = obj.status.as_ref();
    let pending = status.is_some_and(|s| s.create_pending.is_some());
    let rented = status.is_some_and(|s| s.host_id.as_deref().is_some_and(|id| !id.is_empty()));
    let may_rent = !rented && !obj.spec.observe_only() && obj.metadata.deletion_timestamp.is_none();
    has_finalizer(obj) && (pending || release_needed(obj, default).is_some() || may_rent)
}

/// A Secret as a read started at `read` found it.
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

#[derive(Clone, Copy)]
struct Seen {
    read: Instant,
    standing: Standing,
}

/// The Secrets this process protects, and the ones being deleted that it watches.
pub struct Guard {
    /// Each Secret's standing as last read or written, and when that read began.
    seen: Mutex<HashMap<Key, Seen>>,
    /// One read at a time per Secret, shared by every create waiting for one.
    reading: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Secrets being deleted that carry the finalizer: looked at by [`run`].
    terminating: Mutex<HashSet<Key>>,
    check: mpsc::UnboundedSender<Key>,
}

fn key(secret: &SecretRef) -> Key {
    (secret.namespace.clone(), secret.name.clone())
}

impl Guard {
    pub fn new() -> (Guard, mpsc::UnboundedReceiver<Key>) {
        let (check, checks) = mpsc::unbounded_channel();
        let guard = Guard {
            seen: Mutex::default(),
            reading: Mutex::default(),
            terminating: Mutex::default(),
            check,
        };
        (guard, checks)
    }

    /// What the Secret watch shows of a Secret (its metadata).
    pub fn saw(&self, secret: &PartialObjectMeta<Secret>) {
        let key = (secret.namespace().unwrap_or_default(), secret.name_any());
        let ours = secret.finalizers().iter().any(|f| f == FINALIZER);
        let deleting = secret.metadata.deletion_timestamp.is_some();
        let mut seen = self.seen.lock();
        match (ours, deleting) {
            // A watch event is no quorum read: it may only make a create wait, never let
            // one through.
            (_, true) => {
                let read = Instant::now();
                seen.insert(
                    key.clone(),
                    Seen {
                        read,
                        standing: Standing::Terminating,
                    },
                );
            }
            (true, false) => {}
            (false, false) => {
                seen.remove(&key);
            }
        }
        drop(seen);
        if ours && deleting && self.terminating.lock().insert(key.clone()) {
            let _ = self.check.send(key);
        }
    }

    /// The Secret is gone from the cluster.
    pub fn gone(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        self.seen.lock().remove(&key);
        self.terminating.lock().remove(&key);
    }

    /// An object that needed `secret` no longer holds its own finalizer: the Secret may be
    /// free now, if it is being deleted.
    pub fn released(&self, secret: &SecretRef) {
        let key = key(secret);
        if self.terminating.lock().contains(&key) {
            let _ = self.check.send(key);
        }
    }

    /// Makes sure `secret` carries the finalizer, from what this process knows of it.
    pub async fn protect(
        &self,
        client: &kube::Client,
        secret: &SecretRef,
    ) -> Result<Standing, Error> {
        if let Some(seen) = self.seen.lock().get(&key(secret)) {
            return Ok(seen.standing);
        }
        self.read(client, secret, Instant::now()).await
    }

    /// The Secret's standing from a read that began no earlier than `not_before` (shared
    /// with every caller that can take it), protected first if it is not yet: what a
    /// create goes by.
    pub async fn read(
        &self,
        client: &kube::Client,
        secret: &SecretRef,
        not_before: Instant,
    ) -> Result<Standing, Error> {
        let key = key(secret);
        let fresh = |guard: &Guard| {
            let seen = guard.seen.lock();
            seen.get(&key)
                .filter(|s| s.read >= not_before)
                .map(|s| s.standing)
        };
        if let Some(standing) = fresh(self) {
            return Ok(standing);
        }
        let lock = self.reading.lock().entry(key.clone()).or_default().clone();
        let _reading = lock.lock().await;
        if let Some(standing) = fresh(self) {
            return Ok(standing);
        }
        let read = Instant::now();
        let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
        let standing = match api
            .get_metadata_opt(&secret.name)
            .await
            .map_err(Error::from_kube)?
        {
            None => Standing::Gone,
            Some(found) if found.metadata.deletion_timestamp.is_some() => Standing::Terminating,
            Some(found) if found.finalizers().iter().any(|f| f == FINALIZER) => Standing::Protected,
            Some(found) => {
                add_finalizer(client, &found).await?;
                tracing::info!(secret = %format!("{}/{}", secret.namespace, secret.name), "credentials Secret protected: it stays until no object needs it");
                Standing::Protected
            }
        };
        self.seen.lock().insert(key, Seen { read, standing });
        Ok(standing)
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

/// Whether any object may still need `secret` (a quorum list of the objects that can name
/// it: its namespace's, or every watched one's for the operator's default Secret).
async fn in_use(ctx: &Context, secret: &SecretRef) -> Result<bool, Error> {
    let default = ctx.config.default_credentials.as_ref();
    let is_default = default.is_some_and(|d| d == secret);
    let api: Api<RentedHost> = match (&ctx.config.namespace, is_default) {
        (Some(ns), true) => Api::namespaced(ctx.client.clone(), ns),
        (None, true) => Api::all(ctx.client.clone()),
        (_, false) => Api::namespaced(ctx.client.clone(), &secret.namespace),
    };
    let objects = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(Error::from_kube)?;
    let policy = ctx.config.default_deletion_policy;
    Ok(objects.items.iter().any(|o| {
        credentials::secret_ref(o, default).is_some_and(|r| r.is(&secret.namespace, &secret.name))
            && needs_credentials(o, policy)
    }))
}

/// Removes the finalizer of a Secret being deleted once nobody needs it. `Ok(true)` when
/// there is nothing more to do for it.
async fn release_if_unused(ctx: &Context, namespace: &str, name: &str) -> Result<bool, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(found) = api.get_metadata_opt(name).await.map_err(Error::from_kube)? else {
        return Ok(true);
    };
    let ours = found.finalizers().iter().any(|f| f == FINALIZER);
    if !ours || found.metadata.deletion_timestamp.is_none() {
        return Ok(true);
    }
    // The default Secret's keys do not matter here: `is` compares namespace and name.
    let secret = match ctx.config.default_credentials.as_ref() {
        Some(d) if d.is(namespace, name) => d.clone(),
        _ => SecretRef::new(namespace, name),
    };
    if !ctx.config.leadership.is_leading() || in_use(ctx, &secret).await? {
        return Ok(false);
    }
    let rest: Vec<String> = found
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    match patch_finalizers(&ctx.client, &found, rest).await {
        Ok(()) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "credentials Secret no longer needed by any object: its deletion goes on");
            Ok(true)
        }
        // Changed since the read: looked at again.
        Err(Error::Conflict) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Looks at each Secret being deleted when asked (the Secret watch, an object finalized)
/// and every [`RECHECK`], until the controller ends.
pub async fn run(ctx: Arc<Context>, mut checks: mpsc::UnboundedReceiver<Key>) {
    let mut tick = tokio::time::interval(RECHECK);
    loop {
        let due: Vec<Key> = tokio::select! {
            asked = checks.recv() => match asked {
                Some(key) => vec![key],
                None => return,
            },
            _ = tick.tick() => ctx.guard.terminating.lock().iter().cloned().collect(),
        };
        for (namespace, name) in due {
            match release_if_unused(&ctx, &namespace, &name).await {
                Ok(true) => ctx.guard.gone(&namespace, &name),
                Ok(false) => {}
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
    fn an_object_needs_its_credentials_while_it_may_spend_or_must_release() {
        let delete = DeletionPolicy::Delete;
        let fresh = obj(None);
        assert!(needs_credentials(&fresh, delete), "it may rent");
        let mut unfinalized = obj(None);
        unfinalized.metadata.finalizers = None;
        assert!(
            !needs_credentials(&unfinalized, delete),
            "it rents nothing before its finalizer"
        );
        assert!(needs_credentials(&obj(Some(pending(&obj(None)))), delete));
        let rented = with_host("h1", None);
        assert!(needs_credentials(&rented, delete), "a host to release");
        assert!(
            !needs_credentials(&rented, DeletionPolicy::Orphan),
            "kept on deletion"
        );
        let mut observed = with_host("h1", None);
        observed.spec.management_policy = ManagementPolicy::ObserveOnly;
        assert!(!needs_credentials(&observed, delete), "never released");
        let mut deleting = obj(None);
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(
            !needs_credentials(&deleting, delete),
            "nothing rented, nothing to rent"
        );
        let mut releasing = with_host("h1", None);
        releasing.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(needs_credentials(&releasing, delete));
        assert!(releasing.finalizers().iter().any(|f| f == RELEASE));
    }
}
