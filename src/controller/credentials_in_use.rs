//! The finalizer `xuandashi.dev/credentials-in-use` on credentials Secrets, as
//! kubernetes.io/pvc-protection keeps a claim a pod uses, and Crossplane a ProviderConfig
//! in use: while an object needs the provider through a Secret (a host to release under
//! `Delete`, a pending create to settle), deleting the Secret, or its namespace, leaves it
//! Terminating with its data until no such object is left. The operator adds the finalizer
//! before it spends through the Secret, and removes it only once the Secret is being
//! deleted and a quorum list shows that nobody needs it.
//!
//! No new create is made with a Secret that is being deleted. A create reads the Secret
//! and writes its `createPending` within [`Guard::create_window`]; the finalizer goes only
//! once the Secret was seen being deleted for longer than that window and a list taken
//! then shows no object needing it. So a create that read the Secret before its deletion
//! has its pending create in that list, and one that read it after was refused.

use super::credentials::{self, SecretRef};
use super::decision::{has_finalizer, release_needed};
use super::{Context, Error};
use crate::api::{DeletionPolicy, RentedHost};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The finalizer that keeps a credentials Secret while objects need it.
pub const FINALIZER: &str = "xuandashi.dev/credentials-in-use";

/// How often a Secret that is being deleted is looked at again, whatever else happens (an
/// object switched to `Orphan`, say, stops needing it without being deleted).
const RECHECK: Duration = Duration::from_secs(30);

/// Whether `obj` needs the provider through its credentials: it holds the operator's
/// finalizer and has a pending create to settle or a host to release. (An object that has
/// neither checks the Secret when it creates.)
pub fn needs_credentials(obj: &RentedHost, default: DeletionPolicy) -> bool {
    let pending = obj
        .status
        .as_ref()
        .is_some_and(|s| s.create_pending.is_some());
    has_finalizer(obj) && (pending || release_needed(obj, default).is_some())
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

/// The Secrets this process protects, and the ones being deleted that it watches.
pub struct Guard {
    /// Each Secret's standing as last read or written (for objects that need it).
    seen: Mutex<HashMap<Key, Standing>>,
    /// One read at a time per Secret.
    reading: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Secrets being deleted that carry the finalizer: the Secret (its uid: a Secret of
    /// the same name made again is another) and when this process first saw it so. Looked
    /// at by [`run`].
    terminating: Mutex<HashMap<Key, (String, Instant)>>,
    check: mpsc::UnboundedSender<Key>,
    /// The longest a create's read of its Secret and its `createPending` write may take.
    window: Duration,
}

fn key(secret: &SecretRef) -> Key {
    (secret.namespace.clone(), secret.name.clone())
}

impl Guard {
    /// A guard whose creates read and record within `window`.
    pub fn new(window: Duration) -> (Guard, mpsc::UnboundedReceiver<Key>) {
        let (check, checks) = mpsc::unbounded_channel();
        let guard = Guard {
            seen: Mutex::default(),
            reading: Mutex::default(),
            terminating: Mutex::default(),
            check,
            window,
        };
        (guard, checks)
    }

    /// The longest a create may take from its read of the Secret to its recorded
    /// `createPending`: past it, the create is abandoned before anything is sent.
    pub fn create_window(&self) -> Duration {
        self.window
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
        let uid = secret.uid().unwrap_or_default();
        match (ours, deleting) {
            (true, true) => self.terminating_now(&key, &uid),
            // A Secret of this name that is not being deleted: any deletion seen before
            // was another Secret's.
            (_, false) => {
                self.terminating.lock().remove(&key);
            }
            (false, true) => {}
        }
    }

    /// Notes that Secret `uid` of `key` is being deleted (first seen now, unless this
    /// very Secret was seen so before) and asks for a look at it.
    fn terminating_now(&self, key: &Key, uid: &str) {
        let mut terminating = self.terminating.lock();
        if terminating.get(key).is_none_or(|(seen, _)| seen != uid) {
            terminating.insert(key.clone(), (uid.to_string(), Instant::now()));
            let _ = self.check.send(key.clone());
        }
    }

    /// When this process first saw Secret `uid` of `key` being deleted (now, if it had not).
    fn terminating_since(&self, key: &Key, uid: &str) -> Instant {
        let mut terminating = self.terminating.lock();
        match terminating.get(key) {
            Some((seen, at)) if seen == uid => *at,
            _ => {
                let now = Instant::now();
                terminating.insert(key.clone(), (uid.to_string(), now));
                now
            }
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
        if self.terminating.lock().contains_key(&key) {
            let _ = self.check.send(key);
        }
    }

    /// Makes sure `secret` carries the finalizer, from what this process knows of it.
    pub async fn protect(
        &self,
        client: &kube::Client,
        secret: &SecretRef,
    ) -> Result<Standing, Error> {
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

    /// The Secret's standing by a read made now, protected first if it is not yet: what a
    /// create goes by (within [`Guard::create_window`] of its `createPending` write).
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
                    self.terminating_now(&key(secret), &found.uid().unwrap_or_default());
                }
                Standing::Terminating
            }
            Some(found) if found.finalizers().iter().any(|f| f == FINALIZER) => Standing::Protected,
            Some(found) => {
                add_finalizer(client, &found).await?;
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
    // A create that read the Secret before its deletion records its pending create within
    // the window: the list is taken only once the window has passed since the deletion.
    let key = (namespace.to_string(), name.to_string());
    let seen_at = ctx
        .guard
        .terminating_since(&key, &found.uid().unwrap_or_default());
    let grace = ctx.guard.window * 2;
    if let Some(left) = grace.checked_sub(seen_at.elapsed()) {
        let check = ctx.guard.check.clone();
        tokio::spawn(async move {
            tokio::time::sleep(left).await;
            let _ = check.send(key);
        });
        return Ok(false);
    }
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
            _ = tick.tick() => ctx.guard.terminating.lock().keys().cloned().collect(),
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
    fn an_object_needs_its_credentials_while_it_has_a_pending_create_or_a_host_to_release() {
        let delete = DeletionPolicy::Delete;
        assert!(
            !needs_credentials(&obj(None), delete),
            "it checks them when it creates"
        );
        assert!(needs_credentials(&obj(Some(pending(&obj(None)))), delete));
        let mut unfinalized = obj(Some(pending(&obj(None))));
        unfinalized.metadata.finalizers = None;
        assert!(
            !needs_credentials(&unfinalized, delete),
            "nothing of ours to finish"
        );
        let rented = with_host("h1", None);
        assert!(needs_credentials(&rented, delete), "a host to release");
        assert!(
            !needs_credentials(&rented, DeletionPolicy::Orphan),
            "kept on deletion"
        );
        let mut observed = with_host("h1", None);
        observed.spec.management_policy = ManagementPolicy::ObserveOnly;
        assert!(!needs_credentials(&observed, delete), "never released");
        let mut releasing = with_host("h1", None);
        releasing.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(needs_credentials(&releasing, delete));
        assert!(releasing.finalizers().iter().any(|f| f == RELEASE));
    }
}
