//! The `RentedHostPool` custom resource: a number of like RentedHosts, grown and shrunk with
//! `kubectl scale`.

use super::RentedHostSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Label on every child of a pool: the pool's name (the scale subresource's selector).
pub const POOL_LABEL: &str = "xuandashi.dev/pool";

/// A fleet of like hosts: the operator keeps `spec.replicas` RentedHost children made from
/// `spec.template`, each renting its own host under every RentedHost rule (never twice per
/// child). Scale it with `kubectl scale rhp/NAME --replicas=N`; scaling down removes children
/// not yet rented first, then the newest, and each removed child releases its host (per its
/// deletion policy). Deleting the pool deletes its children.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "xuandashi.dev",
    version = "v1alpha1",
    kind = "RentedHostPool",
    doc = "A fleet of like hosts: the operator keeps spec.replicas RentedHost children made from spec.template, each renting its own host. Scale it with kubectl scale; scaling down removes children not yet rented first, then the newest.",
    namespaced,
    shortname = "rhp",
    category = "xuandashi",
    status = "RentedHostPoolStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Current","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("!has(self.spec.template.spec.hostId) || self.spec.template.spec.hostId == ''")
        .message("spec.template.spec.hostId must be empty: every child rents a host of its own")
        .field_path(".spec.template.spec.hostId"),
    validation = Rule::new("!has(self.spec.template.spec.connectionSecretName) || self.spec.template.spec.connectionSecretName == ''")
        .message("spec.template.spec.connectionSecretName must be empty: each child writes <child name>-connection")
        .field_path(".spec.template.spec.connectionSecretName"),
    validation = Rule::new("!has(self.spec.template.spec.deletionPolicy) || self.spec.template.spec.deletionPolicy == 'Delete'")
        .message("spec.template.spec.deletionPolicy must be Delete (or unset): a child removed by scaling releases its host, or the pool would bill more hosts than its replicas")
        .field_path(".spec.template.spec.deletionPolicy"),
    validation = Rule::new("!has(self.spec.template.spec.managementPolicy) || self.spec.template.spec.managementPolicy == 'Full'")
        .message("spec.template.spec.managementPolicy must be Full: a pool rents its hosts")
        .field_path(".spec.template.spec.managementPolicy"),
)]
#[serde(rename_all = "camelCase")]
pub struct RentedHostPoolSpec {
    /// How many RentedHosts (so, hosts) the pool keeps. Each one more rents a host (and
    /// spends its prepaid period); each one fewer releases one.
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// What every child is made of.
    pub template: RentedHostTemplate,
}

/// The children's metadata and spec.
#[serde_with::skip_serializing_none]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RentedHostTemplate {
    /// Labels and annotations every child gets (beside the pool's own label).
    pub metadata: Option<TemplateMetadata>,
    /// The RentedHost spec of every child. `hostId` and `connectionSecretName` must be
    /// empty, and `managementPolicy` `Full`: each child rents a host of its own. Children
    /// always release their host when removed (`deletionPolicy: Delete`, whatever the
    /// operator's default), so that the pool bills as many hosts as its replicas.
    pub spec: RentedHostSpec,
}

/// Labels and annotations of the children.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels of every child.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of every child.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The pool as observed, written by the controller only.
#[serde_with::skip_serializing_none]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RentedHostPoolStatus {
    /// The `metadata.generation` this status was computed for.
    pub observed_generation: Option<i64>,
    /// Children that exist and are not being deleted.
    pub replicas: i32,
    /// Children that are Ready.
    pub ready_replicas: i32,
    /// The children's label selector (for the scale subresource).
    pub selector: Option<String>,
    /// The hosts the children rented, by child name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ids: Vec<String>,
    /// Ready: every wanted child is Ready; otherwise the reason says what it waits for (a
    /// provider refusal such as `InsufficientResources` holds back new children).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::conditions::schema")]
    pub conditions: Vec<Condition>,
}
