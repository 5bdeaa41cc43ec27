//! The `RentedHostBudget` custom resource: the most the creates of a namespace may spend.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A spend limit on the hosts rented in this namespace (pools' children included). Before
/// each createRent the operator reserves the host's prepaid total here; a create that does
/// not fit is not sent (reason `BudgetExceeded`), nor one whose price is unknown
/// (`PriceUnknown`). A budget never stops or releases a host; deleting it removes the
/// limit.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "xuandashi.dev",
    version = "v1alpha1",
    kind = "RentedHostBudget",
    doc = "A spend limit on the hosts rented in this namespace (pools' children included). Before each createRent the operator reserves the host's prepaid total in this budget's status; a create that does not fit is not sent (reason BudgetExceeded), nor one whose price is unknown (PriceUnknown). A budget never stops or releases a host; deleting it removes the limit.",
    namespaced,
    shortname = "rhb",
    category = "xuandashi",
    status = "RentedHostBudgetStatus",
    printcolumn = r#"{"name":"Limit","type":"string","description":"CNY a window may spend","jsonPath":".spec.limit"}"#,
    printcolumn = r#"{"name":"Spent","type":"string","description":"CNY spent in the window","jsonPath":".status.spent"}"#,
    printcolumn = r#"{"name":"Reserved","type":"string","description":"CNY held for creates under way","jsonPath":".status.reserved"}"#,
    printcolumn = r#"{"name":"Window","type":"string","jsonPath":".status.window"}"#,
    printcolumn = r#"{"name":"Hosts","type":"integer","description":"Hosts rented in the window","jsonPath":".status.hosts"}"#,
    printcolumn = r#"{"name":"Max Hosts","type":"integer","priority":1,"jsonPath":".spec.maxHosts"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RentedHostBudgetSpec {
    /// The most the namespace's creates may spend in a window, in CNY (Chinese yuan, the
    /// provider's currency): an exact decimal of at most two decimal places, as a string
    /// (`"5000.00"`, `"259.2"`) or a whole number (`5000`). Each create spends its host's
    /// whole prepaid period (`status.price.prepaidTotal` of the RentedHost) at once.
    /// Lowering it below what is spent refuses new creates only.
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 0 : self.matches('^[0-9]{1,12}([.][0-9]{1,2})?$')").message("spec.limit must be an amount in CNY: a whole number, or a string of digits with at most two decimal places (\"5000.00\")"))]
    pub limit: IntOrString,

    /// What the limit counts: `Month`, the creates of the current calendar month in UTC
    /// (spent starts again from 0 on the 1st), or `Total`, every create since the budget
    /// was made. Creates made before the budget existed are not counted.
    #[serde(default)]
    pub window: BudgetWindow,

    /// The most hosts the namespace's creates may rent in a window (optional).
    #[schemars(range(min = 0, max = 1_000_000), transform = super::int64_format)]
    pub max_hosts: Option<u32>,
}

/// What a budget's limit counts.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, strum::Display,
)]
pub enum BudgetWindow {
    /// The calendar month, in UTC.
    #[default]
    Month,
    /// Everything since the budget was made.
    Total,
}

/// What the budget has spent and holds, written by the controller only.
#[serde_with::skip_serializing_none]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RentedHostBudgetStatus {
    /// The `metadata.generation` this status was computed for.
    pub observed_generation: Option<i64>,
    /// The window the figures are for: a month (`2026-12`, UTC) or `Total`.
    pub window: Option<String>,
    /// CNY spent in the window: the prepaid totals of the hosts rented.
    pub spent: Option<String>,
    /// CNY held for creates under way: the sum of `reservations`.
    pub reserved: Option<String>,
    /// Hosts rented in the window.
    #[schemars(transform = super::int64_format)]
    pub hosts: Option<u32>,
    /// One per create under way: its prepaid total, held from before createRent is called
    /// until its host id is known (then it is spent) or the create is proven not to have
    /// happened (then it is returned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservations: Vec<Reservation>,
}

/// The prepaid total of one create, held until its outcome is known.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// The RentedHost that creates.
    pub object: String,
    /// Its uid.
    pub uid: String,
    /// The create: the `status.createPending.since` it records.
    pub since: String,
    /// CNY held: the host's prepaid total.
    pub amount: String,
    /// The window the create spends in.
    pub window: String,
    /// When the create's recording can no longer land (RFC 3339): past it, a reservation
    /// whose object does not wait for this create is returned.
    pub expires: String,
}
