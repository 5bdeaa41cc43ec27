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

pub async fn add_finalizer(client: &kube::Client, obj: &RentedHost) -> Result<RentedHost, Error> {
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    api(obj, client)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::from_kube)
}

pub async fn remove_finalizer(client: &kube::Client, obj: &RentedHost) -> Result<(), Error> {
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let finalizers: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    match api(obj, client)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
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
    let patch = json!({"metadata": {"annotations": {key: null}}});
    api(obj, client)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
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
