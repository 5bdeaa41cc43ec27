//! Prometheus metrics (prefix `rentedhost_`). Every label value comes from a bounded set:
//! endpoints, documented provider codes, phases, reconcile results — never names or errors.

use crate::api::{Phase, RentedHost, RentedHostBudget};
use crate::provider::{CallObserver, Endpoint};
use crate::readiness::Readiness;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use strum::IntoEnumIterator;

/// Label sets, one struct each: the field names are the label names.
macro_rules! label_sets {
    ($($name:ident { $($label:ident),+ })+) => {$(
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        pub struct $name { $(pub $label: &'static str,)+ }
    )+};
}

label_sets! {
    ResultLabel { result }
    CallLabels { endpoint, code }
    EndpointLabel { endpoint }
    PhaseLabel { phase }
    KubernetesRequestLabels { verb, resource }
    ConditionLabels { condition, reason }
}

/// The namespace label of spend: namespaces are as many as the user's own layout makes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabel {
    pub namespace: String,
}

/// The labels of a budget's gauges: budgets are as many as the user's own layout makes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    pub namespace: String,
    pub budget: String,
}

/// How far ahead `hosts_expiring` looks.
const EXPIRING_WITHIN: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// Whether the object's host is still prepaid but not beyond `until`.
fn expires_before(obj: &RentedHost, until: jiff::Timestamp) -> bool {
    let expiry = obj
        .status
        .as_ref()
        .and_then(|s| s.host.as_ref())
        .and_then(|h| h.expires_at.as_deref())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    expiry.is_some_and(|e| jiff::Timestamp::now() < e && e <= until)
}

/// The condition types `objects` counts by reason.
const COUNTED_CONDITIONS: [&str; 2] = ["Ready", "Synced"];

pub struct Metrics {
    registry: Registry,
    pub reconcile_total: Family<ResultLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub provider_requests: Family<CallLabels, Counter>,
    pub provider_duration: Family<EndpointLabel, Histogram>,
    pub hosts: Family<PhaseLabel, Gauge>,
    pub create_pending: Gauge,
    pub token_refresh: Counter,
    pub kubernetes_requests: Family<KubernetesRequestLabels, Counter>,
    pub objects: Family<ConditionLabels, Gauge>,
    pub time_to_ready: Histogram,
    pub prepaid_spend: Family<NamespaceLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub foreign_hosts: Gauge,
    pub hosts_expiring: Gauge,
    /// Age of the oldest account listing observation reads (seconds).
    pub listing_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The controller's object cache, once it runs (for the object gauges).
    pub store: std::sync::OnceLock<Store<RentedHost>>,
    /// What each budget spent in its window, and its limit (CNY), by namespace and budget.
    pub budget_spent: Family<BudgetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub budget_limit: Family<BudgetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The budget cache, once the controllers run (for the budget gauges).
    pub budgets: std::sync::OnceLock<Store<RentedHostBudget>>,
    /// What `/readyz` and `rentedhost_leader` say.
    pub readiness: Readiness,
}

/// Registers a clone of each metric: the struct keeps the handles the code updates.
macro_rules! register {
    ($registry:ident: $($name:literal, $help:literal => $metric:expr;)+) => {
        $($registry.register($name, $help, $metric.clone());)+
    };
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rentedhost");
        let m = Metrics {
            reconcile_total: Family::default(),
            reconcile_duration: latency_histogram(),
            provider_requests: Family::default(),
            provider_duration: Family::new_with_constructor(latency_histogram),
            hosts: Family::default(),
            create_pending: Gauge::default(),
            token_refresh: Counter::default(),
            kubernetes_requests: Family::default(),
            objects: Family::default(),
            // 1 s to about 4.5 hours.
            time_to_ready: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            prepaid_spend: Family::default(),
            foreign_hosts: Gauge::default(),
            hosts_expiring: Gauge::default(),
            listing_age: Gauge::default(),
            store: std::sync::OnceLock::new(),
            budget_spent: Family::default(),
            budget_limit: Family::default(),
            budgets: std::sync::OnceLock::new(),
            readiness: Readiness::default(),
            registry: Registry::default(),
        };
        register! { registry:
            "reconcile", "Reconciles by result" => m.reconcile_total;
            "reconcile_duration_seconds", "Time spent in one reconcile" => m.reconcile_duration;
            "provider_requests", "Provider API calls by endpoint and code" => m.provider_requests;
            "provider_request_duration_seconds", "Provider API call latency" => m.provider_duration;
            "hosts", "RentedHost objects by phase" => m.hosts;
            "create_pending", "Objects whose createRent outcome is not yet known" => m.create_pending;
            "token_refresh", "Tokens fetched from getToken" => m.token_refresh;
            "kubernetes_requests", "Kubernetes API requests by verb and resource" => m.kubernetes_requests;
            "objects", "RentedHost objects by the reason of their Ready and Synced conditions" => m.objects;
            "time_to_ready_seconds", "Time from an object's creation until it first became Ready" => m.time_to_ready;
            "prepaid_spend", "Prepaid rental (CNY) committed by successful createRent calls, by namespace" => m.prepaid_spend;
            "foreign_hosts", "Hosts that appeared on the accounts since the operator started with no create of its own to explain them (someone else rents there)" => m.foreign_hosts;
            "hosts_expiring", "Hosts whose prepaid period ends within the next 24 hours (renew them, or let them go)" => m.hosts_expiring;
            "listing_age_seconds", "Age of the oldest account listing that observation reads: it grows past the poll interval when an account's hosts take longer to list than the poll allows (the listing's share of the rate limit)" => m.listing_age;
            "budget_spent", "CNY a RentedHostBudget spent in its current window (status.spent), by namespace and budget" => m.budget_spent;
            "budget_limit", "CNY a RentedHostBudget allows in a window (spec.limit), by namespace and budget" => m.budget_limit;
            "leader", "1 while this replica leads (reconciles, and so spends), 0 while it stands by" => m.readiness.leader;
        }
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The observer the provider clients report every call to.
    pub fn provider_observer(self: &Arc<Self>) -> CallObserver {
        let metrics = self.clone();
        Arc::new(
            move |endpoint: Endpoint, code: &'static str, took: Duration| {
                let endpoint = endpoint.as_str();
                metrics
                    .provider_requests
                    .get_or_create(&CallLabels { endpoint, code })
                    .inc();
                metrics
                    .provider_duration
                    .get_or_create(&EndpointLabel { endpoint })
                    .observe(took.as_secs_f64());
                if endpoint == Endpoint::GetToken.as_str() && code == "0" {
                    metrics.token_refresh.inc();
                }
            },
        )
    }

    pub fn kubernetes_request(&self, verb: &'static str, resource: &'static str) {
        self.kubernetes_requests
            .get_or_create(&KubernetesRequestLabels { verb, resource })
            .inc();
    }

    /// A createRent that rented a host whose period costs `total` (CNY) in `namespace`.
    pub fn prepaid(&self, namespace: &str, total: f64) {
        self.prepaid_spend
            .get_or_create(&NamespaceLabel {
                namespace: namespace.to_string(),
            })
            .inc_by(total);
    }

    pub fn reconciled(&self, result: &'static str, took: Duration) {
        self.reconcile_total
            .get_or_create(&ResultLabel { result })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text, with the object gauges computed from the store.
    pub fn render(&self) -> String {
        if let Some(store) = self.store.get() {
            let objects = store.state();
            for phase in Phase::iter() {
                let n = objects
                    .iter()
                    .filter(|o| o.status.as_ref().and_then(|s| s.phase) == Some(phase))
                    .count();
                self.hosts
                    .get_or_create(&PhaseLabel {
                        phase: phase.into(),
                    })
                    .set(n as i64);
            }
            let pending = objects
                .iter()
                .filter(|o| {
                    o.status
                        .as_ref()
                        .is_some_and(|s| s.create_pending.is_some())
                })
                .count();
            self.create_pending.set(pending as i64);
            let soon = jiff::Timestamp::now() + EXPIRING_WITHIN;
            let expiring = objects.iter().filter(|o| expires_before(o, soon)).count();
            self.hosts_expiring.set(expiring as i64);
            self.objects.clear();
            for obj in &objects {
                let conditions = obj.status.iter().flat_map(|s| &s.conditions);
                for c in conditions {
                    let Some(condition) = COUNTED_CONDITIONS.iter().find(|t| **t == c.type_) else {
                        continue;
                    };
                    let reason = bounded_reason(&c.reason);
                    self.objects
                        .get_or_create(&ConditionLabels { condition, reason })
                        .inc();
                }
            }
        }
        if let Some(budgets) = self.budgets.get() {
            self.budget_spent.clear();
            self.budget_limit.clear();
            for budget in budgets.state() {
                let labels = BudgetLabels {
                    namespace: budget.namespace().unwrap_or_default(),
                    budget: budget.name_any(),
                };
                let amount = |d: rust_decimal::Decimal| f64::try_from(d).unwrap_or(f64::NAN);
                if let Some(limit) = crate::budget::book::limit(&budget) {
                    self.budget_limit.get_or_create(&labels).set(amount(limit));
                }
                let spent = budget.status.as_ref().and_then(|s| s.spent.as_deref());
                let spent = spent.and_then(|s| s.parse::<rust_decimal::Decimal>().ok());
                self.budget_spent
                    .get_or_create(&labels)
                    .set(spent.map(amount).unwrap_or(0.0));
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// A condition reason as a label: one of the controller's reasons, else `Other` (the status
/// is the controller's, but a label must stay bounded whatever a status holds).
fn bounded_reason(reason: &str) -> &'static str {
    use std::str::FromStr;
    match crate::api::Reason::from_str(reason) {
        Ok(r) => r.as_str(),
        Err(_) => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiring_at(at: Option<&str>) -> RentedHost {
        let mut obj = RentedHost::new(
            "rh",
            serde_json::from_value(serde_json::json!({
                "packageId": "p", "imageId": "i", "period": {"unit": "Month", "count": 1}
            }))
            .unwrap(),
        );
        let host = crate::api::ObservedHost {
            expires_at: at.map(str::to_string),
            ..Default::default()
        };
        obj.status = Some(crate::api::RentedHostStatus {
            host: Some(host),
            ..Default::default()
        });
        obj
    }

    #[test]
    fn hosts_expiring_are_those_still_prepaid_until_the_horizon() {
        let now = jiff::Timestamp::now();
        let horizon = now + EXPIRING_WITHIN;
        let at = |d: jiff::SignedDuration| (now + d).to_string();
        let hours = jiff::SignedDuration::from_hours;
        assert!(expires_before(&expiring_at(Some(&at(hours(2)))), horizon));
        assert!(expires_before(&expiring_at(Some(&at(hours(23)))), horizon));
        assert!(!expires_before(&expiring_at(Some(&at(hours(25)))), horizon));
        assert!(
            !expires_before(&expiring_at(Some(&at(hours(-1)))), horizon),
            "expired already"
        );
        assert!(
            !expires_before(&expiring_at(Some("tomorrow")), horizon),
            "unreadable"
        );
        assert!(!expires_before(&expiring_at(None), horizon));
    }

    #[test]
    fn provider_calls_are_counted_with_bounded_labels() {
        let metrics = Arc::new(Metrics::default());
        let observe = metrics.provider_observer();
        observe(Endpoint::GetToken, "0", Duration::from_millis(3));
        observe(Endpoint::CreateRent, "6002", Duration::from_millis(7));
        metrics.reconciled("ok", Duration::from_millis(12));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"rentedhost_provider_requests_total{endpoint="createRent",code="6002"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("rentedhost_token_refresh_total 1"), "{text}");
        assert!(
            text.contains(r#"rentedhost_reconcile_total{result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("rentedhost_reconcile_duration_seconds_bucket"),
            "{text}"
        );
    }
}
