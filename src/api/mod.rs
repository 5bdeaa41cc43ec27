//! The `RentedHost` custom resource (`xuandashi.dev/v1alpha1`): spec, status and the CRD
//! generated from them. Doc comments on fields become `kubectl explain` text.

mod budget;
mod conditions;
mod pool;
mod reason;

pub use budget::*;
pub use conditions::{ConditionType, Conditions, conditions_equal};
pub use pool::*;
pub use reason::{Act, EventReason, Reason};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every resource this operator owns.
pub const GROUP: &str = "xuandashi.dev";
/// Finalizer that keeps an object until its host is released (or orphaned).
pub const FINALIZER: &str = "xuandashi.dev/release-host";
/// Annotation that allows a new createRent after an ambiguous outcome.
pub const CREATE_NOT_RENTED_ANNOTATION: &str = "xuandashi.dev/create-not-rented";
/// Annotation whose every new value reboots the host once.
pub const REBOOT_ANNOTATION: &str = "xuandashi.dev/reboot-requested-at";
/// Annotation that, set to `"true"`, stops every provider call for the object.
pub const PAUSED_ANNOTATION: &str = "xuandashi.dev/paused";
/// Annotation whose every new value retries the object once, at once, whatever its backoff.
pub const RETRY_ANNOTATION: &str = "xuandashi.dev/retry-requested-at";

/// The rule that keeps an id within the provider's alphabet (letters, digits, `-`, `_`): an
/// id with any other character would reach the provider as another id, or not at all.
macro_rules! provider_id {
    ($field:literal) => {
        Rule::new("self.matches('^[A-Za-z0-9_-]*$')").message(concat!(
            $field,
            " may hold only letters, digits, '-' and '_' (the provider's ids): a stray character (a dot, a slash, a space, an invisible one) would name another host or none"
        ))
    };
}

/// The rule that keeps a request field as it was once a host is rented (status.hostId set).
macro_rules! immutable_once_rented {
    ($field:literal) => {
        Rule::new(concat!(
            "!has(oldSelf.status) || !has(oldSelf.status.hostId) || oldSelf.status.hostId == '' || self.spec.",
            $field,
            " == oldSelf.spec.",
            $field
        ))
        .message(concat!(
            "spec.",
            $field,
            " is immutable once a host is rented (status.hostId is set)"
        ))
        .field_path(concat!(".spec.", $field))
    };
}

/// The rule that freezes a request field while a create is pending: the host that call may
/// have rented is matched against the request it sent.
macro_rules! frozen_while_pending {
    ($field:literal) => {
        Rule::new(concat!(
            "!has(oldSelf.status) || !has(oldSelf.status.createPending) || self.spec.",
            $field,
            " == oldSelf.spec.",
            $field
        ))
        .message(concat!(
            "spec.",
            $field,
            " cannot change while a createRent is pending (status.createPending): the host that call may have rented is matched against the request it sent"
        ))
        .field_path(concat!(".spec.", $field))
    };
}

/// A prepaid host rented from the Xuandashi cloud. The operator calls `createRent` once for
/// the object, records the host id in `status.hostId`, keeps the status true to the host, and
/// releases the host when the object is deleted (unless `deletionPolicy` is `Orphan`).
#[serde_with::skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "xuandashi.dev",
    version = "v1alpha1",
    kind = "RentedHost",
    doc = "A prepaid host rented from the Xuandashi cloud. The operator calls createRent once for the object (never twice: see status.createPending), records the host id in status.hostId, keeps the status true to the host (state, address, expiry, power), writes its login to the connection Secret, and releases the host when the object is deleted (unless spec.deletionPolicy is Orphan).",
    namespaced,
    shortname = "rh",
    category = "xuandashi",
    status = "RentedHostStatus",
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".status.hostId"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.host.expiresAt"}"#,
    printcolumn = r#"{"name":"Prepaid","type":"string","description":"What the rental period cost, in CNY","jsonPath":".status.price.prepaidTotal"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Package","type":"string","description":"The package rented, or until then the one the next createRent asks for","priority":1,"jsonPath":".status.packageId"}"#,
    validation = immutable_once_rented!("packageId"),
    validation = immutable_once_rented!("imageId"),
    validation = immutable_once_rented!("period"),
    validation = frozen_while_pending!("packageId"),
    validation = frozen_while_pending!("imageId"),
    validation = frozen_while_pending!("period"),
    validation = Rule::new("!has(oldSelf.status) || ((!has(oldSelf.status.hostId) || oldSelf.status.hostId == '') && !has(oldSelf.status.createPending)) || (has(self.spec.fallbackPackageIds) ? self.spec.fallbackPackageIds : []) == (has(oldSelf.spec.fallbackPackageIds) ? oldSelf.spec.fallbackPackageIds : [])")
        .message("spec.fallbackPackageIds is immutable once a host is rented (status.hostId is set), and cannot change while a createRent is pending (status.createPending)")
        .field_path(".spec.fallbackPackageIds"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.createPending) || has(oldSelf.status.createPending.askedAt) || (has(self.spec.hostId) ? self.spec.hostId : '') == (has(oldSelf.spec.hostId) ? oldSelf.spec.hostId : '')")
        .message("spec.hostId can be set while a createRent is pending (status.createPending) only once the operator asks for it (reason CreateOutcomeUnknown): the pending create is resolved first")
        .field_path(".spec.hostId"),
    validation = Rule::new("!has(oldSelf.spec.hostId) || oldSelf.spec.hostId == '' || (has(self.spec.hostId) && self.spec.hostId == oldSelf.spec.hostId) || !has(oldSelf.status) || !has(oldSelf.status.hostId) || oldSelf.status.hostId == ''")
        .message("spec.hostId is immutable once the host is adopted (status.hostId is set)")
        .field_path(".spec.hostId"),
    validation = Rule::new("!has(self.spec.hostId) || self.spec.hostId == '' || !has(oldSelf.status) || !has(oldSelf.status.hostId) || oldSelf.status.hostId == '' || self.spec.hostId == oldSelf.status.hostId")
        .message("spec.hostId must name the host already rented (status.hostId) once one is")
        .field_path(".spec.hostId"),
    validation = Rule::new("!has(self.spec.managementPolicy) || self.spec.managementPolicy != 'ObserveOnly' || (has(self.spec.hostId) && self.spec.hostId != '')")
        .message("spec.managementPolicy ObserveOnly needs spec.hostId: the host to observe (the operator never rents for an observe-only object)")
        .field_path(".spec.managementPolicy"),
)]
#[serde(rename_all = "camelCase")]
pub struct RentedHostSpec {
    /// Host configuration to rent: a `packageId` from the provider's rental package list
    /// (`packAge/1`). Its `type` must equal the image's `type`. Immutable once a host is rented.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = provider_id!("spec.packageId"))]
    pub package_id: String,

    /// Packages to ask for, in order, when the one before answers 6002 (insufficient
    /// resources): at most 5, each a `packageId` of the same `type` as the image. After the
    /// last, the create backs off and starts again from `packageId`. A package refused with
    /// 7005 (its type is not the image's) is skipped. `status.packageId` names the package
    /// rented (price and budgets use it). Immutable once a host is rented.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new("self.all(p, p.matches('^[A-Za-z0-9_-]*$'))").message("spec.fallbackPackageIds may hold only letters, digits, '-' and '_' (the provider's ids): a stray character (a dot, a slash, a space, an invisible one) would name another package or none"))]
    pub fallback_package_ids: Vec<String>,

    /// System image to install: an `imageId` from the provider's image list (numeric-looking,
    /// but a string). Its `type` must equal the package's `type`. Immutable once a host is rented.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = provider_id!("spec.imageId"))]
    pub image_id: String,

    /// Prepaid rental period, paid for when the host is created. Immutable once a host is rented.
    pub period: RentalPeriod,

    /// What happens to the host when this object is deleted: `Delete` releases it on the
    /// provider, `Orphan` keeps it running (and billed) there. Default: the operator's
    /// `--default-deletion-policy` (chart value `defaultDeletionPolicy`, `Delete` unless
    /// changed); `status.deletionPolicy` shows the policy in effect.
    pub deletion_policy: Option<DeletionPolicy>,

    /// Whether the operator manages the host (`Full`) or only shows it (`ObserveOnly`: the
    /// status, expiry and connection Secret of `spec.hostId`, but never a power change, a
    /// reboot or a release, whatever `powerState`, annotations or `deletionPolicy` say; for
    /// a host someone else pays for). `ObserveOnly` needs `spec.hostId`. Switching to `Full`
    /// takes the host over.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// Desired power state of the host: `Running` or `Stopped`.
    #[serde(default)]
    pub power_state: PowerState,

    /// Adopt this existing host instead of renting a new one. Immutable once the host is
    /// adopted (`status.hostId` is set); while a createRent is pending, accepted only as the
    /// answer the operator asks for (reason `CreateOutcomeUnknown`). Letters, digits, `-`
    /// and `_` only, as the provider writes host ids.
    #[schemars(length(max = 64))]
    #[x_kube(validation = provider_id!("spec.hostId"))]
    pub host_id: Option<String>,

    /// Name of the Secret that receives the host's login details (`hostAccount`, `hostPw`,
    /// `address`, `port`). Default: `<metadata.name>-connection`.
    #[schemars(length(max = 253))]
    pub connection_secret_name: Option<String>,

    /// Provider credentials (account `uuid` and app `secret`) in a Secret of this object's
    /// namespace. Default: the operator's own credentials Secret.
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
}

impl RentedHostSpec {
    /// The deletion policy in effect: the object's own, else the operator's default.
    pub fn deletion_policy_or(&self, default: DeletionPolicy) -> DeletionPolicy {
        match self.management_policy {
            ManagementPolicy::ObserveOnly => DeletionPolicy::Orphan,
            ManagementPolicy::Full => self.deletion_policy.unwrap_or(default),
        }
    }

    pub fn observe_only(&self) -> bool {
        self.management_policy == ManagementPolicy::ObserveOnly
    }

    /// The packages a create may ask for, in order: `packageId`, then the fallbacks (each
    /// once).
    pub fn packages(&self) -> Vec<&str> {
        let mut packages: Vec<&str> = Vec::with_capacity(1 + self.fallback_package_ids.len());
        for p in std::iter::once(&self.package_id).chain(&self.fallback_package_ids) {
            if !packages.contains(&p.as_str()) {
                packages.push(p);
            }
        }
        packages
    }
}

/// The API server knows the integer formats `int32` and `int64` only (it warns about
/// schemars' `uint32`); every `u32` fits `int64`.
fn int64_format(schema: &mut schemars::Schema) {
    schema.insert("format".into(), "int64".into());
}

/// A rental period: `count` units of `unit`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RentalPeriod {
    /// Number of units to rent for (at least 1).
    #[schemars(range(min = 1, max = 1000), transform = int64_format)]
    pub count: u32,
    /// Unit of the period: Hour, Day, Week, Month, Quarter or Year.
    pub unit: PeriodUnit,
}

/// Unit of a rental period (the provider's codes for them: `provider::period`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, strum::Display)]
pub enum PeriodUnit {
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

/// What deleting the object does to its host.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    strum::Display,
    strum::EnumString,
    clap::ValueEnum,
)]
#[value(rename_all = "verbatim")]
pub enum DeletionPolicy {
    /// Release the host on the provider.
    #[default]
    Delete,
    /// Keep the host on the provider.
    Orphan,
}

/// How far the operator manages the host.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, strum::Display,
)]
pub enum ManagementPolicy {
    /// Rent (or adopt), operate and release the host.
    #[default]
    Full,
    /// Only observe the host named in `spec.hostId`.
    ObserveOnly,
}

/// Desired power state.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, strum::Display,
)]
pub enum PowerState {
    #[default]
    Running,
    Stopped,
}

/// Where the provider credentials are.
#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret, in the RentedHost's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the account id. Default: `uuid`.
    pub uuid_key: Option<String>,
    /// Key holding the app secret. Default: `secret`.
    pub secret_key: Option<String>,
}

/// Observed state, written by the controller only.
#[serde_with::skip_serializing_none]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RentedHostStatus {
    /// The `metadata.generation` this status was computed for.
    pub observed_generation: Option<i64>,
    /// Id of the rented (or adopted) host at the provider.
    pub host_id: Option<String>,
    /// The provider account (its id, `uuid`) that the host or the pending create belongs
    /// to. Credentials that name another account are refused for this object: releasing or
    /// looking for its host there would find nothing and prove nothing.
    pub account: Option<String>,
    /// Lifecycle phase: Pending, Creating, Provisioning, Running, Stopped, Expired, Failed or Deleting.
    pub phase: Option<Phase>,
    /// Number of createRent calls made for this object.
    #[schemars(transform = int64_format)]
    pub create_attempts: Option<u32>,
    /// Present only while a createRent call's outcome is not yet known.
    pub create_pending: Option<CreatePending>,
    /// The create that rented the host: its `createPending.since`. The budgets' reservation
    /// of that create is spent by it.
    pub rented_since: Option<String>,
    /// The last provider error, kept until a success replaces it.
    pub last_error: Option<LastError>,
    /// The last `xuandashi.dev/reboot-requested-at` value acted on.
    pub last_reboot_request: Option<String>,
    /// The last `xuandashi.dev/retry-requested-at` value acted on.
    pub last_retry_request: Option<String>,
    /// The deletion policy in effect: `spec.deletionPolicy`, else the operator's default
    /// (`Orphan` for an observe-only object).
    pub deletion_policy: Option<DeletionPolicy>,
    /// The package of the host: the one its create asked for (`spec.packageId` or one of
    /// `spec.fallbackPackageIds`); until a host is rented, the package the next createRent
    /// asks for.
    pub package_id: Option<String>,
    /// Packages refused with 7005 for an image: not asked for again while `spec.imageId`
    /// names that image.
    pub skipped_packages: Option<SkippedPackages>,
    /// What the host costs, from the provider's package list.
    pub price: Option<Price>,
    /// The host as last observed at the provider (never its login secret).
    pub host: Option<ObservedHost>,
    /// Ready, Rented and Synced conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions::schema")]
    pub conditions: Vec<Condition>,
}

/// Whether the object carries `xuandashi.dev/paused: "true"`.
pub fn is_paused(obj: &RentedHost) -> bool {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PAUSED_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

impl RentedHostStatus {
    /// The reason of condition `t`, when it is one this operator writes.
    pub fn reason(&self, t: ConditionType) -> Option<Reason> {
        let condition = self.conditions.iter().find(|c| c.type_ == t.as_str())?;
        condition.reason.parse().ok()
    }
}

/// Packages refused with 7005 (their type is not the image's) for one image.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SkippedPackages {
    /// The image they were refused for.
    pub image_id: String,
    /// The packages refused.
    pub package_ids: Vec<String>,
}

/// The price of the host, from the provider's rental package list (`packAge/1`). Amounts
/// are decimal strings in the provider's currency, Chinese yuan (CNY), as its console bills.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// Price per hour in CNY: the package's `amount` × its `discount`.
    pub hourly: String,
    /// What the period costs in CNY, paid when the host is created: `hourly` × the hours of
    /// `spec.period` (a day 24, a week 168, a month 720, a quarter 2160, a year 8760).
    pub prepaid_total: String,
    /// The currency of the amounts: `CNY`.
    pub currency: String,
}

/// Lifecycle phase of a RentedHost.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
pub enum Phase {
    Pending,
    Creating,
    Provisioning,
    Running,
    Stopped,
    Expired,
    Failed,
    Deleting,
}

/// A createRent call whose outcome is not yet known.
#[serde_with::skip_serializing_none]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CreatePending {
    /// When the call was about to be made (RFC 3339). The value of the
    /// `xuandashi.dev/create-not-rented` annotation that allows a new create names it.
    pub since: String,
    /// The request sent: a host found for this create must match it (the spec cannot change
    /// while a create is pending).
    pub request: Option<CreateRequest>,
    /// When the call ended without a usable answer (RFC 3339); absent while it is in flight
    /// or when the operator stopped during it. Hosts created after this (plus clock skew)
    /// are not this create's.
    pub call_ended: Option<String>,
    /// The latest the call can end (RFC 3339), fixed before it began: the end of the window
    /// when the call's end was not recorded.
    pub deadline: Option<String>,
    /// When the operator stopped to ask a person about this create (reason
    /// `CreateOutcomeUnknown`, RFC 3339). From then on `spec.hostId` is accepted as the
    /// answer, and the `xuandashi.dev/create-not-rented` annotation naming `since`.
    pub asked_at: Option<String>,
}

/// What a createRent call asked for.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    /// The package requested: `spec.packageId` or one of `spec.fallbackPackageIds`.
    pub package_id: String,
    /// The image requested.
    pub image_id: String,
    /// The rental period requested.
    pub period: RentalPeriod,
}

impl CreateRequest {
    /// The request of `spec` for its first package.
    pub fn of(spec: &RentedHostSpec) -> CreateRequest {
        CreateRequest::asking(spec, &spec.package_id)
    }

    /// The request of `spec` for `package_id` (one of `spec.packages()`).
    pub fn asking(spec: &RentedHostSpec, package_id: &str) -> CreateRequest {
        CreateRequest {
            package_id: package_id.to_string(),
            image_id: spec.image_id.clone(),
            period: spec.period.clone(),
        }
    }
}

/// The last error the provider (or the controller's view of it) reported.
#[serde_with::skip_serializing_none]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// Provider error code, when the provider gave one.
    pub code: Option<i64>,
    /// Reason, as in the Ready condition.
    #[schemars(with = "String")]
    pub reason: Reason,
    /// Explanation; the provider's `msg` verbatim is kept in `providerMessage`.
    pub message: String,
    /// The provider's own message, verbatim.
    pub provider_message: Option<String>,
    /// The provider's request id, for its support desk.
    pub trace_id: Option<String>,
}

/// Host state observed at the provider.
#[serde_with::skip_serializing_none]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObservedHost {
    /// Stopped, Starting, Running, Billing, Stopping or Expired.
    pub status: Option<String>,
    /// Address to connect to.
    pub address: Option<String>,
    /// Port to connect to.
    pub port: Option<i64>,
    /// Operating system of the image.
    pub operating_system: Option<String>,
    /// CPU cores.
    pub cpu: Option<i64>,
    /// Memory in GB.
    pub memory_gb: Option<i64>,
    /// Disk in GB.
    pub disk_gb: Option<i64>,
    /// Creation time (RFC 3339).
    pub created_at: Option<String>,
    /// Expiry time (RFC 3339).
    pub expires_at: Option<String>,
}

/// The custom resources of this operator, each with its CRD file under `crds/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, strum::EnumIter)]
pub enum Kind {
    RentedHost,
    RentedHostPool,
    RentedHostBudget,
}

impl Kind {
    /// The kind's CRD, as this binary generates it.
    pub fn crd(
        self,
    ) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition
    {
        match self {
            Kind::RentedHost => RentedHost::crd(),
            Kind::RentedHostPool => RentedHostPool::crd(),
            Kind::RentedHostBudget => RentedHostBudget::crd(),
        }
    }

    /// The kind's CRD as YAML, as checked in under `crds/`.
    pub fn crd_yaml(self) -> String {
        serde_yaml::to_string(&self.crd()).expect("a CRD always serializes")
    }

    /// Its file under `crds/` (and the chart's `crds/`).
    pub fn crd_file(self) -> &'static str {
        match self {
            Kind::RentedHost => "rentedhost.yaml",
            Kind::RentedHostPool => "rentedhostpool.yaml",
            Kind::RentedHostBudget => "rentedhostbudget.yaml",
        }
    }
}

/// Every CRD, as one multi-document YAML (what `kubectl apply -f -` takes).
pub fn crd_yaml() -> String {
    use strum::IntoEnumIterator;
    Kind::iter()
        .map(Kind::crd_yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crds_are_current() {
        use strum::IntoEnumIterator;
        for kind in Kind::iter() {
            for dir in ["crds", "charts/rentedhost-operator/crds"] {
                let file = format!("{dir}/{}", kind.crd_file());
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&file);
                let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
                assert!(
                    checked_in == kind.crd_yaml(),
                    "{file} is stale: run `make crd`"
                );
            }
        }
    }
}
