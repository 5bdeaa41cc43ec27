//! Writes to the API server: status by server-side apply (only when it changed), finalizer
//! and annotation patches guarded by resourceVersion.

use crate::api::{FINALIZER, RentedHost, RentedHostStatus};
use crate::kit::{Error, status};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use std::collections::HashSet;

/// Reporting controller of events, and field manager of metadata and Secret writes.
pub const MANAGER: &str = "rentedhost-operator";
/// Field manager of observation and error writes: every status field except the protocol's.
/// It never applies `hostId` or `createPending`, so none of its writes, however stale the
/// view it was computed from, can remove or change them (server-side apply removes only
/// fields the applying manager owns).
pub const STATUS_MANAGER: &str = "rentedhost-operator-status";
/// Field manager of the protocol fields (`hostId`, `createPending`, `createAttempts`,
/// `account`, `packageId`, `skippedPackages` and `rentedSince`, which say what a create asks
/// for and what rented the host, `lastRetryRequest`, which goes with the create it allowed, and
/// `lastRebootRequest`, recorded before the reboot it allows), written only by
/// resourceVersion-guarded patches based on a quorum read or a write's answer.
pub const PROTOCOL_MANAGER: &str = "rentedhost-operator-protocol";

/// The status without the protocol's fields: what an observation write may touch.
fn observation_part(status: &RentedHostStatus) -> RentedHostStatus {
    RentedHostStatus {
        host_id: None,
        create_pending: None,
        create_attempts: None,
        account: None,
        // The package a create asks for goes with it, and the host's with its id.
        package_id: None,
        skipped_packages: None,
        rented_since: None,
        // Recorded with the create (or before the reboot) it allowed: a stale write must not
        // make it new again.
        last_retry_request: None,
        last_reboot_request: None,
        ..status.clone()
    }
}

fn api(obj: &RentedHost, client: &kube::Client) -> Api<RentedHost> {
    crate::kit::beside(client, obj)
}

/// Applies the observation part of `status` when it differs from the object's. The
/// protocol fields are never part of it: see [`STATUS_MANAGER`].
pub async fn apply_status(
    client: &kube::Client,
    obj: &RentedHost,
    status: &RentedHostStatus,
) -> Result<RentedHost, Error> {
    let wanted = observation_part(status);
    let current = obj.status.as_ref().map(observation_part);
    if !status::changed(current.as_ref(), &wanted) {
        return Ok(obj.clone());
    }
    status::apply(&api(obj, client), obj, STATUS_MANAGER, &wanted).await
}

/// How long an applied status is remembered: longer than the watch lags behind a write.
const RECENT: std::time::Duration = std::time::Duration::from_secs(30);

/// The observation statuses this process applied in the last [`RECENT`], by object (uid):
/// a reconcile on a cache that still shows the object as it was before one of them (the
/// watch reporting the controller's writes one by one) neither applies it again nor tells
/// its note a second time. Only that: a cache that shows anything else (a pause, an adoption,
/// a protocol write, another writer) is written as ever.
#[derive(Default)]
pub struct RecentStatuses(Mutex<RecentMap>);

#[derive(Default)]
struct RecentMap {
    by_uid: std::collections::HashMap<String, Recent>,
    /// Entries when the map was last pruned (it is pruned when it doubles).
    pruned_at: usize,
}

/// One applied status: the object's status before and after it, and the version written.
struct Recent {
    before: u64,
    after: u64,
    version: Option<String>,
    at: std::time::Instant,
}

/// The observation part of a status, conditions compared without their timestamps.
fn digest(status: Option<&RentedHostStatus>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let Some(status) = status else {
        return h.finish();
    };
    let mut part = observation_part(status);
    let mut conditions: Vec<_> = std::mem::take(&mut part.conditions)
        .into_iter()
        .map(|c| {
            (
                c.type_,
                c.status,
                c.reason,
                c.message,
                c.observed_generation,
            )
        })
        .collect();
    conditions.sort();
    serde_json::to_string(&part)
        .unwrap_or_default()
        .hash(&mut h);
    conditions.hash(&mut h);
    h.finish()
}

impl RecentStatuses {
    /// Whether this process applied `status` to `obj` within the last [`RECENT`], and `obj`
    /// (from a lagging cache) still shows it as it was before that write.
    pub fn just_written(&self, obj: &RentedHost, status: &RentedHostStatus) -> bool {
        let recent = self.0.lock();
        let Some(r) = recent.by_uid.get(&obj.uid().unwrap_or_default()) else {
            return false;
        };
        r.at.elapsed() < RECENT
            && r.version != obj.resource_version()
            && r.before == digest(obj.status.as_ref())
            && r.after == digest(Some(status))
    }

    /// This process applied `status` to `before`, which the API server stored as `after`.
    pub fn wrote(&self, before: &RentedHost, after: &RentedHost, status: &RentedHostStatus) {
        let (was, now_is) = (digest(before.status.as_ref()), digest(Some(status)));
        if was == now_is || before.resource_version() == after.resource_version() {
            // Nothing was sent.
            return;
        }
        let mut recent = self.0.lock();
        let now = std::time::Instant::now();
        let entry = Recent {
            before: was,
            after: now_is,
            version: after.resource_version(),
            at: now,
        };
        recent.by_uid.insert(after.uid().unwrap_or_default(), entry);
        if recent.by_uid.len() > 2 * recent.pruned_at.max(512) {
            recent
                .by_uid
                .retain(|_, r| now.duration_since(r.at) < RECENT);
            recent.by_uid.shrink_to_fit();
            recent.pruned_at = recent.by_uid.len();
        }
    }

    pub fn forget(&self, obj: &RentedHost) {
        self.0.lock().by_uid.remove(&obj.uid().unwrap_or_default());
    }
}

/// Objects (uid) whose `lastRebootRequest` the protocol's manager owns in this process's
/// knowledge (it wrote or shared it: see [`share_reboot_record`]).
#[derive(Default)]
pub struct RebootRecords(Mutex<HashSet<String>>);

impl RebootRecords {
    /// Whether `obj` records a reboot its older operator's status manager may own alone.
    pub fn need_sharing(&self, obj: &RentedHost) -> bool {
        let recorded = obj
            .status
            .as_ref()
            .is_some_and(|s| s.last_reboot_request.is_some());
        recorded && !self.0.lock().contains(&obj.uid().unwrap_or_default())
    }

    /// The protocol's manager owns `obj`'s `lastRebootRequest` (it wrote or shared it).
    pub fn shared(&self, obj: &RentedHost) {
        self.0.lock().insert(obj.uid().unwrap_or_default());
    }

    pub fn forget(&self, obj: &RentedHost) {
        self.0.lock().remove(&obj.uid().unwrap_or_default());
    }
}

/// Makes the protocol's manager an owner of `status.lastRebootRequest` as it stands, which
/// an older operator's status manager owned alone: that manager's applies no longer carry
/// it, and without a second owner the next one would remove it (and the reboot it records
/// would be made again). An apply of the same value shares the field; a different value
/// (a view that lags) conflicts and is read again.
pub async fn share_reboot_record(client: &kube::Client, obj: &RentedHost) -> Result<(), Error> {
    let Some(value) = obj
        .status
        .as_ref()
        .and_then(|s| s.last_reboot_request.clone())
    else {
        return Ok(());
    };
    let patch = json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHost",
        "status": {"lastRebootRequest": value},
    });
    api(obj, client)
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(PROTOCOL_MANAGER),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::from_kube)?;
    Ok(())
}

/// Writes the protocol fields of `status` exactly (set, changed or removed) in a patch that
/// carries `obj`'s resourceVersion, so it fails with a conflict if the object changed since
/// `obj` was read from the API server; then the observation part, when what the patch did
/// not carry changed. `obj` must come from a quorum read or a write's answer, never from the
/// cache.
///
/// When nothing else of the observation part changed, the patch also carries the fields
/// every observation write sets (`phase`, `conditions`, `observedGeneration`) and the
/// apply is not needed: a create is recorded, and its answer written, in one request
/// each. The status manager's next apply takes those fields over. They must stay fields
/// every status sets (and conditions keep their three types): once this patch has owned
/// one, an apply that leaves it out cannot remove it.
/// Otherwise (an error to explain, say) the apply writes them together with the rest, so
/// that no one sees a condition without the error it names.
pub async fn write_protocol(
    client: &kube::Client,
    obj: &RentedHost,
    status: &RentedHostStatus,
) -> Result<RentedHost, Error> {
    // Every nested field is named, null when absent: a merge patch keeps what it omits.
    let pending = status.create_pending.as_ref().map(|p| {
        json!({
            "since": p.since,
            "request": p.request,
            "callEnded": p.call_ended,
            "deadline": p.deadline,
            "askedAt": p.asked_at,
        })
    });
    let mut patch = json!({
        "metadata": {"resourceVersion": obj.resource_version()},
        "status": {
            "hostId": status.host_id,
            "createPending": pending,
            "createAttempts": status.create_attempts,
            "account": status.account,
            "packageId": status.package_id,
            "rentedSince": status.rented_since,
            "skippedPackages": status.skipped_packages,
            "lastRetryRequest": status.last_retry_request,
            "lastRebootRequest": status.last_reboot_request,
        },
    });
    let beyond_always_set = |s: &RentedHostStatus| RentedHostStatus {
        phase: None,
        conditions: Vec::new(),
        observed_generation: None,
        ..observation_part(s)
    };
    let before = obj.status.clone().unwrap_or_default();
    if beyond_always_set(&before) == beyond_always_set(status) {
        patch["status"]["phase"] = json!(status.phase);
        patch["status"]["conditions"] = json!(status.conditions);
        patch["status"]["observedGeneration"] = json!(status.observed_generation);
    }
    let params = PatchParams {
        field_manager: Some(PROTOCOL_MANAGER.into()),
        ..Default::default()
    };
    let status_api = api(obj, client);
    let written = match status_api
        .patch_status(&obj.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        // Should the API server refuse the observation fields, the protocol fields alone
        // still go in: they must never wait on anything else.
        Err(kube::Error::Api(e)) if e.code == 422 && patch["status"].get("phase").is_some() => {
            tracing::warn!(error = %e.message, "status refused with the protocol write; writing the protocol fields alone");
            let status = patch["status"].as_object_mut().expect("an object");
            for field in ["phase", "conditions", "observedGeneration"] {
                status.remove(field);
            }
            status_api
                .patch_status(&obj.name_any(), &params, &Patch::Merge(&patch))
                .await
        }
        other => other,
    }
    .map_err(Error::from_kube)?;
    match apply_status(client, &written, status).await {
        Ok(latest) => Ok(latest),
        Err(error) => {
            // The protocol fields are written; the rest follows at the next reconcile.
            tracing::warn!(%error, "status write after a protocol write failed");
            Ok(written)
        }
    }
}

/// Merge-patches the object's metadata.
async fn patch_metadata(
    client: &kube::Client,
    obj: &RentedHost,
    metadata: serde_json::Value,
) -> Result<RentedHost, kube::Error> {
    let patch = json!({ "metadata": metadata });
    api(obj, client)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
}

/// Adds the finalizer, guarded by resourceVersion.
pub async fn add_finalizer(client: &kube::Client, obj: &RentedHost) -> Result<RentedHost, Error> {
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    let metadata = json!({"finalizers": finalizers, "resourceVersion": obj.resource_version()});
    patch_metadata(client, obj, metadata)
        .await
        .map_err(Error::from_kube)
}

/// Removes the finalizer, guarded by resourceVersion; a vanished object is fine.
pub async fn remove_finalizer(client: &kube::Client, obj: &RentedHost) -> Result<(), Error> {
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let finalizers: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let metadata = json!({"finalizers": finalizers, "resourceVersion": obj.resource_version()});
    match patch_metadata(client, obj, metadata).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::from_kube(e)),
    }
}

/// Removes an annotation the controller has acted on.
pub async fn remove_annotation(
    client: &kube::Client,
    obj: &RentedHost,
    key: &str,
) -> Result<(), Error> {
    patch_metadata(client, obj, json!({"annotations": {key: null}}))
        .await
        .map(|_| ())
        .map_err(Error::from_kube)
}

/// What writing the connection Secret came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionSecret {
    /// Written; the Secret's resourceVersion after the write.
    Written(Option<String>),
    /// A Secret of that name exists and this object does not control it: it is left alone.
    NotOurs,
}

/// Writes the connection Secret (owned by the object, so it goes with it), unless a Secret
/// of that name exists that this object does not control: the operator never takes over a
/// Secret it did not create. The first write is a create, which proves in one request that
/// no Secret of that name existed; only when one exists is it read, and applied if ours.
pub async fn apply_connection_secret(
    client: &kube::Client,
    obj: &RentedHost,
    name: &str,
    data: &std::collections::BTreeMap<String, String>,
) -> Result<ConnectionSecret, Error> {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::PostParams;
    use kube::core::PartialObjectMeta;
    let ns = obj.namespace().unwrap_or_default();
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.to_string());
    secret.metadata.namespace = Some(ns.clone());
    secret.metadata.owner_references = obj.controller_owner_ref(&()).map(|r| vec![r]);
    secret.metadata.labels = Some(
        [(
            "app.kubernetes.io/managed-by".to_string(),
            MANAGER.to_string(),
        )]
        .into(),
    );
    secret.type_ = Some("Opaque".into());
    secret.data = Some(
        data.iter()
            .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    );
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let create = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match api.create(&create, &secret).await {
        Ok(created) => return Ok(ConnectionSecret::Written(created.resource_version())),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(Error::from_kube(e)),
    }
    let existing: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), &ns);
    if let Some(current) = existing
        .get_metadata_opt(name)
        .await
        .map_err(Error::from_kube)?
    {
        let ours = current
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == obj.uid().as_ref());
        if !ours {
            return Ok(ConnectionSecret::NotOurs);
        }
        // Applied only to this very Secret: were it replaced meanwhile by one that is not
        // ours, the apply fails with a conflict instead of taking it over.
        secret.metadata.resource_version = current.resource_version();
    }
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map(|written| ConnectionSecret::Written(written.resource_version()))
    .map_err(Error::from_kube)
}
