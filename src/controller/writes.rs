//! Writes to the API server: status by server-side apply (only when it changed), finalizer
//! and annotation patches guarded by resourceVersion, and events.

use super::Error;
use super::decision::Note;
use crate::api::{FINALIZER, RentedHost, RentedHostStatus, conditions_equal};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde_json::json;

/// Field manager of every write this controller makes.
pub const MANAGER: &str = "rentedhost-operator";

/// Whether two statuses differ in more than condition timestamps.
pub fn status_changed(before: Option<&RentedHostStatus>, after: &RentedHostStatus) -> bool {
    let Some(before) = before else { return true };
    let strip = |s: &RentedHostStatus| RentedHostStatus {
        conditions: Vec::new(),
        ..s.clone()
    };
    strip(before) != strip(after) || !conditions_equal(&before.conditions, &after.conditions)
}

fn api(obj: &RentedHost, client: &kube::Client) -> Api<RentedHost> {
    Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default())
}

/// Applies `status` when it differs from the object's. With `guarded`, the write carries
/// the object's resourceVersion and fails with a conflict if the object changed since.
pub async fn apply_status(
    client: &kube::Client,
    obj: &RentedHost,
    status: &RentedHostStatus,
    guarded: bool,
) -> Result<RentedHost, Error> {
    if !guarded && !status_changed(obj.status.as_ref(), status) {
        return Ok(obj.clone());
    }
    let mut patch = json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHost",
        "status": status,
    });
    if guarded {
        patch["metadata"] = json!({"resourceVersion": obj.resource_version()});
    }
    let params = PatchParams::apply(MANAGER).force();
    api(obj, client)
        .patch_status(&obj.name_any(), &params, &Patch::Apply(&patch))
        .await
        .map_err(Error::from_kube)
}

/// Applies `status`, retrying a few times: used where losing the write costs a lookup.
pub async fn apply_status_retrying(
    client: &kube::Client,
    obj: &RentedHost,
    status: &RentedHostStatus,
) -> Result<RentedHost, Error> {
    let mut delay = std::time::Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        match apply_status(client, obj, status, false).await {
            Ok(o) => return Ok(o),
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %e, attempt, "status write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
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

/// Publishes a note as an Event on the object; failures are logged, not fatal.
pub async fn publish(recorder: &Recorder, obj: &RentedHost, note: &Note, action: &str) {
    let event = Event {
        type_: if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.to_string(),
        note: Some(note.message.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(%error, reason = note.reason, "could not publish event");
    }
}

/// Writes the connection Secret (owned by the object, so it goes with it).
pub async fn apply_connection_secret(
    client: &kube::Client,
    obj: &RentedHost,
    name: &str,
    data: &std::collections::BTreeMap<String, String>,
) -> Result<(), Error> {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.to_string());
    secret.metadata.namespace = obj.namespace();
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
    let api: Api<Secret> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map(|_| ())
    .map_err(Error::from_kube)
}
