//! Standard `metav1.Condition` handling: a map list keyed on `type`, transition times kept
//! while the status stays the same, and comparison without timestamps (so an unchanged
//! status is never written again).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{Schema, SchemaGenerator, json_schema};

/// The condition types this operator maintains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
pub enum ConditionType {
    /// The host is rented and in the requested power state.
    Ready,
    /// A host id is known.
    Rented,
    /// The last reconcile succeeded.
    Synced,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Sets one condition, keeping its `lastTransitionTime` when its status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: bool,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let existing = conditions.iter_mut().find(|c| c.type_ == type_.as_str());
    let transition = match &existing {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now,
    };
    let condition = Condition {
        type_: type_.as_str().to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation,
        last_transition_time: transition,
    };
    match existing {
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
}

/// Compares condition lists without their timestamps.
pub fn conditions_equal(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// Schema of `status.conditions`: the standard Condition, as a map list keyed on `type`
/// so that server-side apply merges conditions by type.
pub fn schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "Standard conditions (Ready, Rented, Synced), keyed on type.",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {"type": "string", "description": "Condition type: Ready, Rented or Synced."},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"], "description": "True, False or Unknown."},
                "reason": {"type": "string", "description": "Machine-readable reason in CamelCase."},
                "message": {"type": "string", "description": "Human-readable explanation."},
                "observedGeneration": {"type": "integer", "format": "int64", "description": "Generation the condition was set for."},
                "lastTransitionTime": {"type": "string", "format": "date-time", "description": "When the status last changed."}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let mut c = Vec::new();
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-01T00:05:00Z");
        set_condition(
            &mut c,
            ConditionType::Ready,
            false,
            "Creating",
            "a",
            Some(1),
            t0.clone(),
        );
        set_condition(
            &mut c,
            ConditionType::Ready,
            false,
            "ProviderCreating",
            "b",
            Some(1),
            t1.clone(),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, t0);
        assert_eq!(c[0].reason, "ProviderCreating");
        set_condition(
            &mut c,
            ConditionType::Ready,
            true,
            "Running",
            "c",
            Some(1),
            t1.clone(),
        );
        assert_eq!(c[0].last_transition_time, t1);
    }

    #[test]
    fn equality_ignores_timestamps_and_order() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        set_condition(
            &mut a,
            ConditionType::Ready,
            true,
            "R",
            "m",
            Some(1),
            time("2026-01-01T00:00:00Z"),
        );
        set_condition(
            &mut a,
            ConditionType::Rented,
            true,
            "R",
            "m",
            Some(1),
            time("2026-01-01T00:00:00Z"),
        );
        set_condition(
            &mut b,
            ConditionType::Rented,
            true,
            "R",
            "m",
            Some(1),
            time("2026-02-01T00:00:00Z"),
        );
        set_condition(
            &mut b,
            ConditionType::Ready,
            true,
            "R",
            "m",
            Some(1),
            time("2026-02-01T00:00:00Z"),
        );
        assert!(conditions_equal(&a, &b));
        set_condition(
            &mut b,
            ConditionType::Ready,
            true,
            "R",
            "other",
            Some(1),
            time("2026-02-01T00:00:00Z"),
        );
        assert!(!conditions_equal(&a, &b));
    }
}
