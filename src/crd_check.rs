//! Before any controller starts: the API server serves every CRD this binary reconciles,
//! with every field it writes. An upgrade that skipped `kubectl apply` of the new CRDs would
//! otherwise have the API server drop fields silently (a reboot repeated on every poll, a
//! pending create no person can answer): the operator waits instead, says why at ERROR with
//! the command that fixes it, in `/readyz`, and in an event on each object it cannot serve.

use crate::api::{Kind, RentedHost};
use crate::metrics::Metrics;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use strum::IntoEnumIterator;

/// The command that installs the CRDs of this chart (README, "Upgrading").
pub const FIX: &str =
    "kubectl apply --server-side --force-conflicts -f charts/rentedhost-operator/crds/";

/// How often the CRDs are read again while they are not what this binary needs.
const RECHECK: Duration = Duration::from_secs(5);

/// What is wrong with one served CRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The CRD is not installed (or does not serve this version).
    Absent { crd: String },
    /// The served schema lacks fields this binary writes.
    Outdated { crd: String, fields: Vec<String> },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Absent { crd } => write!(f, "CRD {crd} is not installed"),
            Problem::Outdated { crd, fields } => {
                write!(f, "CRD {crd} lacks {}", fields.join(", "))
            }
        }
    }
}

/// Every field path of `generated` (an OpenAPI v3 schema) that `served` lacks: `spec.hostId`,
/// `status.conditions[].reason`. A field missing is named once, not with its children.
pub fn missing_fields(generated: &Value, served: &Value) -> Vec<String> {
    let mut missing = Vec::new();
    walk(generated, served, "", &mut missing);
    missing
}

fn walk(generated: &Value, served: &Value, path: &str, missing: &mut Vec<String>) {
    if let Some(properties) = generated.get("properties").and_then(Value::as_object) {
        for (name, schema) in properties {
            let here = match path {
                "" => name.clone(),
                _ => format!("{path}.{name}"),
            };
            match served.get("properties").and_then(|p| p.get(name)) {
                Some(theirs) => walk(schema, theirs, &here, missing),
                None => missing.push(here),
            }
        }
    }
    if let (Some(items), Some(theirs)) = (generated.get("items"), served.get("items")) {
        walk(items, theirs, &format!("{path}[]"), missing);
    }
}

/// The generated and served schema of one CRD's version, as JSON.
fn schema_of(crd: &CustomResourceDefinition, version: &str) -> Option<Value> {
    let served = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == version && v.served)?;
    let schema = served.schema.as_ref()?.open_api_v3_schema.as_ref()?;
    serde_json::to_value(schema).ok()
}

/// What is wrong with the served CRDs (nothing: an empty list).
pub async fn check(client: &Client) -> Result<Vec<Problem>, kube::Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut problems = Vec::new();
    for kind in Kind::iter() {
        let generated = kind.crd();
        let name = generated.metadata.name.clone().unwrap_or_default();
        let version = &generated.spec.versions[0].name;
        let Some(want) = schema_of(&generated, version) else {
            continue;
        };
        let served = api.get_opt(&name).await?;
        match served.as_ref().and_then(|c| schema_of(c, version)) {
            None => problems.push(Problem::Absent { crd: name }),
            Some(have) => {
                let fields = missing_fields(&want, &have);
                if !fields.is_empty() {
                    problems.push(Problem::Outdated { crd: name, fields });
                }
            }
        }
    }
    Ok(problems)
}

/// Who is told, besides `/readyz` and the log, that the operator does not reconcile.
#[derive(Debug, Clone)]
pub enum Audience {
    /// A replica before the election: the objects are told only while no replica holds
    /// `lease` (an older leader, on the CRDs it knows, may serve them all the while).
    UnlessLed {
        lease: (String, String),
        instance: Option<String>,
    },
    /// The leader: each RentedHost gets one Warning event, from this instance.
    Objects { instance: Option<String> },
}

/// Waits until the served CRDs are what this binary needs; `false` if `shutdown` came
/// first. Meanwhile `/readyz` says why, the log says it at ERROR (again when it changes),
/// and `audience` hears it.
pub async fn wait_until_served(
    client: &Client,
    metrics: &Arc<Metrics>,
    audience: Audience,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut told: Option<Vec<Problem>> = None;
    let mut warned = std::collections::HashSet::new();
    loop {
        // A SIGTERM ends the wait at once, whatever call is under way (an API server that
        // stalls, a long round of events).
        let checked = tokio::select! {
            checked = check(client) => checked,
            _ = &mut shutdown => return false,
        };
        match checked {
            Ok(problems) if problems.is_empty() => {
                if told.is_some() {
                    tracing::info!("the installed CRDs are now current: starting the controllers");
                }
                metrics.readiness.block(None);
                return true;
            }
            Ok(problems) => {
                let why = problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                let message = format!(
                    "the operator does not reconcile: {why} (the CRD upgrade was skipped?); run `{FIX}`"
                );
                if told.as_ref() != Some(&problems) {
                    tracing::error!(problems = %why, fix = FIX, "{message}");
                    told = Some(problems.clone());
                }
                metrics.readiness.block(Some(message.clone()));
                let tell = async {
                    let instance = match &audience {
                        Audience::Objects { instance } => Some(instance),
                        Audience::UnlessLed { lease, instance } => {
                            (!someone_leads(client, lease).await).then_some(instance)
                        }
                    };
                    if let Some(instance) = instance {
                        tell_objects(client, instance.clone(), &message, &mut warned).await;
                    }
                };
                tokio::select! {
                    _ = tell => {}
                    _ = &mut shutdown => return false,
                }
            }
            // Not allowed to look (RBAC without the chart's CRD read): the check is a safety
            // net, not a gate a custom role should have to know about.
            Err(kube::Error::Api(e)) if e.code == 403 => {
                tracing::warn!(error = %e.message, "cannot read the installed CRDs (grant get on customresourcedefinitions rentedhosts.xuandashi.dev and rentedhostpools.xuandashi.dev, as the chart does); starting without checking them");
                metrics.readiness.block(None);
                return true;
            }
            Err(error) => {
                let message = format!("cannot read the installed CRDs: {error}");
                tracing::warn!(%error, "cannot read the installed CRDs; retrying");
                metrics.readiness.block(Some(message));
            }
        }
        tokio::select! {
            _ = &mut shutdown => return false,
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// Whether the Lease has a holder whose last renewal is within its duration (by the
/// timestamps: good enough to decide whom to tell, never to decide who may spend).
async fn someone_leads(client: &Client, (namespace, name): &(String, String)) -> bool {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let Ok(Some(lease)) = leases.get_opt(name).await else {
        return false;
    };
    let spec = lease.spec.unwrap_or_default();
    let held = spec.holder_identity.is_some_and(|h| !h.is_empty());
    let fresh = spec.renew_time.is_some_and(|t| {
        let duration =
            jiff::SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
        t.0 + duration > jiff::Timestamp::now()
    });
    held && fresh
}

/// One Warning event on each RentedHost not yet told, when their CRD is served at all.
async fn tell_objects(
    client: &Client,
    instance: Option<String>,
    message: &str,
    told: &mut std::collections::HashSet<String>,
) {
    let api: Api<RentedHost> = Api::all(client.clone());
    let Ok(objects) = api.list(&ListParams::default()).await else {
        return;
    };
    let reporter = Reporter {
        controller: crate::controller::writes::MANAGER.into(),
        instance,
    };
    let recorder = Recorder::new(client.clone(), reporter);
    for obj in objects.items {
        let uid = obj.meta().uid.clone().unwrap_or_default();
        if !told.insert(uid) {
            continue;
        }
        let event = Event {
            type_: EventType::Warning,
            reason: "CRDOutdated".into(),
            note: Some(message.to_string()),
            action: "CheckCRD".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::debug!(%error, "publishing a CRD event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn schema() -> Value {
        let crd = RentedHost::crd();
        schema_of(&crd, "v1alpha1").unwrap()
    }

    #[test]
    fn a_current_crd_lacks_nothing() {
        assert_eq!(missing_fields(&schema(), &schema()), Vec::<String>::new());
    }

    #[test]
    fn fields_an_older_crd_lacks_are_named_once() {
        let mut old = schema();
        let status = &mut old["properties"]["status"]["properties"];
        status.as_object_mut().unwrap().remove("lastRebootRequest");
        let pending = &mut status["createPending"]["properties"];
        pending.as_object_mut().unwrap().remove("askedAt");
        status.as_object_mut().unwrap().remove("price");
        let mut missing = missing_fields(&schema(), &old);
        missing.sort();
        assert_eq!(
            missing,
            [
                "status.createPending.askedAt",
                "status.lastRebootRequest",
                "status.price"
            ]
        );
    }

    #[test]
    fn array_items_are_compared_too() {
        let mut old = schema();
        let condition = &mut old["properties"]["status"]["properties"]["conditions"]["items"];
        condition["properties"]
            .as_object_mut()
            .unwrap()
            .remove("observedGeneration");
        assert_eq!(
            missing_fields(&schema(), &old),
            ["status.conditions[].observedGeneration"]
        );
    }
}
