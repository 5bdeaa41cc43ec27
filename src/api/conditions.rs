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

/// The conditions of one status, set by name, all for one generation at one time; a
/// condition keeps its `lastTransitionTime` while its status does not change.
pub struct Conditions<'a> {
    list: &'a mut Vec<Condition>,
    generation: Option<i64>,
    now: Time,
}

impl<'a> Conditions<'a> {
    pub fn new(list: &'a mut Vec<Condition>, generation: Option<i64>, now: Time) -> Self {
        Conditions {
            list,
            generation,
            now,
        }
    }

    /// Ready: the host is rented and in the requested power state.
    pub fn ready(&mut self, ok: bool, reason: &str, message: &str) -> &mut Self {
        self.set(
            ConditionType::Ready,
            Verdict {
                ok,
                reason,
                message,
            },
        )
    }

    /// Rented: a host id is known.
    pub fn rented(&mut self, ok: bool, reason: &str, message: &str) -> &mut Self {
        self.set(
            ConditionType::Rented,
            Verdict {
                ok,
                reason,
                message,
            },
        )
    }

    /// Synced: the last reconcile succeeded.
    pub fn synced(&mut self, ok: bool, reason: &str, message: &str) -> &mut Self {
        self.set(
            ConditionType::Synced,
            Verdict {
                ok,
                reason,
                message,
            },
        )
    }

    fn set(&mut self, type_: ConditionType, verdict: Verdict<'_>) -> &mut Self {
        let status = if verdict.ok { "True" } else { "False" }.to_string();
        let existing = self.list.iter_mut().find(|c| c.type_ == type_.as_str());
        let transition = match &existing {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => self.now.clone(),
        };
        let condition = Condition {
            type_: type_.as_str().to_string(),
            status,
            reason: verdict.reason.to_string(),
            message: verdict.message.to_string(),
            observed_generation: self.generation,
            last_transition_time: transition,
        };
        match existing {
            Some(c) => *c = condition,
            None => self.list.push(condition),
        }
        self
    }
}

struct Verdict<'m> {
    ok: bool,
    reason: &'m str,
    message: &'m str,
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
        Conditions::new(&mut c, Some(1), t0.clone()).ready(false, "Creating", "a");
        Conditions::new(&mut c, Some(1), t1.clone()).ready(false, "ProviderCreating", "b");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, t0);
        assert_eq!(c[0].reason, "ProviderCreating");
        Conditions::new(&mut c, Some(1), t1.clone()).ready(true, "Running", "c");
        assert_eq!(c[0].last_transition_time, t1);
    }

    #[test]
    fn equality_ignores_timestamps_and_order() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        Conditions::new(&mut a, Some(1), time("2026-01-01T00:00:00Z"))
            .ready(true, "R", "m")
            .rented(true, "R", "m");
        Conditions::new(&mut b, Some(1), time("2026-02-01T00:00:00Z"))
            .rented(true, "R", "m")
            .ready(true, "R", "m");
        assert!(conditions_equal(&a, &b));
        Conditions::new(&mut b, Some(1), time("2026-02-01T00:00:00Z")).ready(true, "R", "other");
        assert!(!conditions_equal(&a, &b));
    }
}
