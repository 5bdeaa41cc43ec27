//! Operating the host: power state and reboot requests, and what the provider answered.

use super::status::*;
use super::*;

/// The power operation the spec asks of this host: `Some(true)` start, `Some(false)` stop;
/// never for an observe-only object.
pub fn power_action(obj: &RentedHost, host: &Host) -> Option<bool> {
    if obj.spec.observe_only() {
        return None;
    }
    match (obj.spec.power_state, host.host_status()?) {
        (PowerState::Running, HostStatus::Stopped) => Some(true),
        (PowerState::Stopped, HostStatus::Running | HostStatus::Billing) => Some(false),
        _ => None,
    }
}

/// A host operation's answer, over the transition of the observation it followed.
pub struct Operated<'a> {
    pub observed: Transition,
    pub answer: &'a Result<bool, ProviderError>,
}

impl<'a> Operated<'a> {
    /// The transition, the answer, and the id of the host operated on.
    fn into_parts(self) -> (Transition, &'a Result<bool, ProviderError>, String) {
        let id = self.observed.status.host_id.clone().unwrap_or_default();
        (self.observed, self.answer, id)
    }
}

/// The answer of `operate` (`start`: power on, else off), folded into the observation.
pub fn after_power(obj: &RentedHost, op: Operated<'_>, start: bool, now: Timestamp) -> Transition {
    let (mut t, answer, id) = op.into_parts();
    match answer {
        Ok(_)
        | Err(ProviderError::Business {
            code: 6000 | 6001, ..
        }) => {
            let (reason, verb) = if start {
                (Reason::Starting, "starting")
            } else {
                (Reason::Stopping, "stopping")
            };
            let msg = format!(
                "{verb} host {id} for spec.powerState {}",
                obj.spec.power_state
            );
            conditions_of(&mut t.status, obj, now).ready(false, reason.as_str(), &msg);
            if answer.is_ok() {
                let act = if start { Act::PowerOn } else { Act::PowerOff };
                t.note = Some(Note::new(Severity::Info, act, msg));
            }
            t.requeue = Requeue::Observe { transitional: true };
        }
        Err(error) => {
            let verb = if start { "start" } else { "stop" };
            let (reason, msg) = operation_failed(
                obj,
                &mut t,
                operation_error(&format!("{verb} host {id}"), error),
                now,
            );
            conditions_of(&mut t.status, obj, now).ready(false, reason.as_str(), &msg);
            t.requeue = Requeue::Retry(reason);
        }
    }
    t
}

/// The `lastError` of a host operation (`what`) the provider refused or did not answer.
pub(super) fn operation_error(what: &str, error: &ProviderError) -> LastError {
    let plain = last_error(Reason::of(error), error);
    LastError {
        message: format!("cannot {what}: {}", plain.message),
        ..plain
    }
}

/// A refused or failed host operation: `lastError`, its event and `Synced=False`.
pub(super) fn operation_failed(
    obj: &RentedHost,
    t: &mut Transition,
    e: LastError,
    now: Timestamp,
) -> (Reason, String) {
    let reason = e.reason;
    let msg = error_message(&e);
    t.note = error_note(&obj.status.clone().unwrap_or_default(), &e);
    t.status.last_error = Some(e);
    conditions_of(&mut t.status, obj, now).synced(false, reason.as_str(), &msg);
    (reason, msg)
}

/// A reboot request (annotation value) not yet acted on; never for an observe-only object.
pub fn reboot_due(obj: &RentedHost) -> Option<String> {
    if obj.spec.observe_only() {
        return None;
    }
    let handled = obj
        .status
        .as_ref()
        .and_then(|s| s.last_reboot_request.as_deref());
    super::controls::new_request(obj, REBOOT_ANNOTATION, handled)
}

/// A reboot asked of a host the spec wants stopped (asked while paused, say): dropped, not
/// sent (the provider would refuse it with 7004), with a note.
pub fn reboot_dropped(mut t: Transition, value: &str) -> Transition {
    t.status.last_reboot_request = Some(value.to_string());
    t.note = Some(Note::new(
        Severity::Warning,
        Act::RebootDropped,
        format!(
            "the reboot requested at {value} was dropped: spec.powerState is Stopped (set it to Running, then ask again)"
        ),
    ));
    t
}

/// The answer of `reboot` for request `value`, folded into the observation.
pub fn after_reboot(obj: &RentedHost, op: Operated<'_>, value: &str, now: Timestamp) -> Transition {
    let (mut t, answer, id) = op.into_parts();
    match answer {
        Ok(_) => {
            t.status.last_reboot_request = Some(value.to_string());
            let msg = format!("rebooting host {id} (requested at {value})");
            conditions_of(&mut t.status, obj, now).ready(false, Reason::Starting.as_str(), &msg);
            t.note = Some(Note::new(Severity::Info, Act::Rebooting, msg));
            t.requeue = Requeue::Observe { transitional: true };
        }
        Err(error) => {
            let (reason, _) = operation_failed(
                obj,
                &mut t,
                operation_error(&format!("reboot host {id}"), error),
                now,
            );
            // "Not running" is final for this request; "unavailable" is retried.
            if reason != Reason::HostUnavailable && error.is_proven_refusal() {
                t.status.last_reboot_request = Some(value.to_string());
            } else {
                t.requeue = Requeue::Retry(reason);
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decision::testing::*;

    fn operated(observed: Transition, answer: &Result<bool, ProviderError>) -> Operated<'_> {
        Operated { observed, answer }
    }

    #[test]
    fn power_and_reboot_answers() {
        let mut o = with_host("h1", Some(Phase::Stopped));
        o.metadata.annotations = Some([(REBOOT_ANNOTATION.to_string(), "v1".to_string())].into());
        let mut h = host("h1", t0(), 8);
        h.status = Some(HostStatus::Stopped.code().into());
        assert_eq!(power_action(&o, &h), Some(true));
        let seen = || after_observe(&o, "h1", Some(&h), t0());
        let started = after_power(&o, operated(seen(), &Ok(true)), true, t0());
        assert_eq!(started.note.unwrap().reason.as_str(), "PowerOn");
        assert_eq!(started.requeue, Requeue::Observe { transitional: true });
        let busy = after_power(&o, operated(seen(), &Err(business(6000))), true, t0());
        assert!(
            busy.note.is_none() && busy.status.last_error.is_none(),
            "6000 means wait"
        );
        let broke = after_power(&o, operated(seen(), &Err(business(6003))), true, t0());
        assert_eq!(
            cond(&broke.status, ConditionType::Ready).1,
            "InsufficientBalance"
        );
        assert!(
            broke
                .status
                .last_error
                .unwrap()
                .message
                .starts_with("cannot start host h1")
        );

        assert_eq!(reboot_due(&o), Some("v1".into()));
        let refused = after_reboot(&o, operated(seen(), &Err(business(7002))), "v1", t0());
        assert_eq!(
            refused.status.last_reboot_request.as_deref(),
            Some("v1"),
            "not running: final for this request"
        );
        assert_eq!(
            cond(&refused.status, ConditionType::Synced).1,
            "HostNotRunning"
        );
        let busy = after_reboot(&o, operated(seen(), &Err(business(7003))), "v1", t0());
        assert!(
            busy.status.last_reboot_request.is_none(),
            "unavailable: retried"
        );
        assert_eq!(busy.requeue, Requeue::Retry(Reason::HostUnavailable));
        let done = after_reboot(&o, operated(seen(), &Ok(true)), "v1", t0());
        assert_eq!(done.status.last_reboot_request.as_deref(), Some("v1"));
        let mut after = o.clone();
        after.status = Some(done.status);
        assert_eq!(reboot_due(&after), None, "one reboot per value");
    }
}
