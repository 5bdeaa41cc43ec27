//! The reconcile decision, as pure functions of (object, what the provider said, now):
//! which step comes next, and the status, event and requeue each answer leads to.
//! No I/O here; `reconcile.rs` performs the steps.

use super::reason::Reason;
use super::resolution::Resolution;
use crate::api::{
    Act, CREATE_NOT_RENTED_ANNOTATION, Conditions, CreatePending, CreateRequest, DeletionPolicy,
    EventReason, FINALIZER, LastError, ObservedHost, Phase, PowerState, REBOOT_ANNOTATION,
    RETRY_ANNOTATION, RentedHost, RentedHostStatus,
};
use crate::provider::{Host, HostStatus, ProviderError, provider_detail};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

mod controls;
mod create;
mod observe;
mod operate;
mod packages;
#[cfg(test)]
mod properties;
mod release;
mod status;
#[cfg(test)]
pub(crate) mod testing;

pub use controls::*;
pub use create::*;
pub use observe::*;
pub use operate::*;
pub use packages::next_package;
pub use release::*;
pub use status::{account_changed, credentials_missing, provider_failed};

/// What the reconciler does next for an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Paused by the user: no provider call, only `Synced=False` (reason `Paused`).
    Paused,
    AddFinalizer,
    /// The object is being deleted.
    Finalize,
    /// Deleting is done with the host (the finalizer is gone); other finalizers hold the
    /// object (a foreground deletion's, say): nothing to do.
    Finalized,
    /// Keep the object true to its known host.
    Observe(String),
    /// Adopt the host named in `spec.hostId`.
    Adopt(String),
    /// A createRent's outcome is not known: look for its host before anything else.
    ResolvePending,
    /// The spec was refused for good (7005) at this generation: wait for a change.
    WaitForSpecChange,
    /// Record `createPending`, then call createRent.
    Create,
}

/// An event to publish, and the log line that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub severity: Severity,
    pub reason: EventReason,
    pub message: String,
}

impl Note {
    pub fn new(severity: Severity, reason: impl Into<EventReason>, message: String) -> Note {
        Note {
            severity,
            reason: reason.into(),
            message,
        }
    }

    /// Whether the event is a Warning (else Normal).
    pub fn is_warning(&self) -> bool {
        matches!(self.severity, Severity::Warning | Severity::Alarm)
    }
}

/// What a note means, which decides its event type and log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The normal story (created, running, stopped, released): a Normal event, INFO.
    Info,
    /// Nothing failed, but money is at stake (a host adopted, a create not committed or not
    /// rented, a host orphaned): a Normal event, WARN.
    Money,
    /// Something failed, is unknown or gone: a Warning event, WARN.
    Warning,
    /// The operator cannot do its job for the object until a person acts: a Warning event,
    /// ERROR.
    Alarm,
}

/// When to reconcile again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Retry per the reason's row of the retry table (per-object backoff).
    Retry(Reason),
    /// Observe the host again: soon while it is changing state, else at the poll interval.
    Observe { transitional: bool },
    /// After this long (a protocol wait, not an error).
    After(Duration),
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub status: RentedHostStatus,
    pub note: Option<Note>,
    pub requeue: Requeue,
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub fn has_finalizer(obj: &RentedHost) -> bool {
    obj.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FINALIZER)
}

/// The next step for an object as it stands.
pub fn plan(obj: &RentedHost) -> Step {
    let status = obj.status.clone().unwrap_or_default();
    // A pending create resolves before a pause takes hold: its host must not be dropped.
    if is_paused(obj) && status.create_pending.is_none() {
        return Step::Paused;
    }
    if obj.metadata.deletion_timestamp.is_some() {
        return match has_finalizer(obj) {
            true => Step::Finalize,
            false => Step::Finalized,
        };
    }
    if !has_finalizer(obj) {
        return Step::AddFinalizer;
    }
    if let Some(id) = nonempty(&status.host_id) {
        return Step::Observe(id);
    }
    if status.create_pending.is_some() {
        // A pending create is resolved before anything else, so that its host is never
        // dropped. The API server accepts spec.hostId during a pending create only once
        // the operator has asked a person (CreateOutcomeUnknown): then it is their answer,
        // whatever later errors wrote into the status.
        return match nonempty(&obj.spec.host_id) {
            Some(id) => Step::Adopt(id),
            None => Step::ResolvePending,
        };
    }
    if let Some(id) = nonempty(&obj.spec.host_id) {
        return Step::Adopt(id);
    }
    // The API server refuses ObserveOnly without spec.hostId; should one get in anyway, it
    // never rents.
    if obj.spec.observe_only() {
        return Step::WaitForSpecChange;
    }
    let refused_for_this_spec = status
        .last_error
        .as_ref()
        .is_some_and(|e| e.reason == Reason::TypeMismatch)
        && status.observed_generation == obj.metadata.generation
        && next_package(obj).is_none();
    if refused_for_this_spec {
        return Step::WaitForSpecChange;
    }
    Step::Create
}

/// Whether the operator asked a person about the pending create (CreateOutcomeUnknown):
/// a mark in `createPending` itself, so that no later write of another error hides it and
/// no earlier one fakes it.
fn stopped_as_unknown(status: &RentedHostStatus) -> bool {
    status
        .create_pending
        .as_ref()
        .is_some_and(|p| p.asked_at.is_some())
}

/// Whether the user allowed a new create after an ambiguous outcome: only once the operator
/// asked (CreateOutcomeUnknown), and only by naming that pending create's `since`, so that
/// a stale or re-applied annotation allows nothing.
pub fn create_not_rented_allowed(obj: &RentedHost) -> bool {
    let Some(status) = obj.status.as_ref() else {
        return false;
    };
    let Some(pending) = status.create_pending.as_ref() else {
        return false;
    };
    let named = obj
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CREATE_NOT_RENTED_ANNOTATION));
    stopped_as_unknown(status) && named.is_some_and(|v| v.trim() == pending.since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PAUSED_ANNOTATION;
    use crate::controller::decision::testing::*;

    #[test]
    fn plan_covers_every_state() {
        let mut o = obj(None);
        o.metadata.finalizers = None;
        assert_eq!(plan(&o), Step::AddFinalizer);
        let o = obj(None);
        assert_eq!(plan(&o), Step::Create);
        let o = with_host("h1", None);
        assert_eq!(plan(&o), Step::Observe("h1".into()));
        let mut o = obj(None);
        o.spec.host_id = Some("h2".into());
        assert_eq!(plan(&o), Step::Adopt("h2".into()));
        let o = obj(Some(pending(&obj(None))));
        assert_eq!(plan(&o), Step::ResolvePending);
        let mut user_pick = o.clone();
        user_pick.spec.host_id = Some("h3".into());
        assert_eq!(
            plan(&user_pick),
            Step::Adopt("h3".into()),
            "spec.hostId (accepted only once a person was asked) is the answer"
        );
        let refused =
            after_create(&obj(None), &pending(&obj(None)), &Err(business(7005)), t0()).status;
        let o = obj(Some(refused.clone()));
        assert_eq!(plan(&o), Step::WaitForSpecChange);
        let mut changed = obj(Some(refused));
        changed.metadata.generation = Some(2);
        assert_eq!(
            plan(&changed),
            Step::Create,
            "a new generation retries 7005"
        );
        let mut deleting = obj(None);
        deleting.metadata.deletion_timestamp = Some(Time(t0()));
        assert_eq!(plan(&deleting), Step::Finalize);
        let mut held_by_others = with_host("h1", None);
        held_by_others.metadata.deletion_timestamp = Some(Time(t0()));
        held_by_others.metadata.finalizers = Some(vec!["foregroundDeletion".into()]);
        assert_eq!(
            plan(&held_by_others),
            Step::Finalized,
            "released once, not again"
        );
        let empty = with_host("  ", None);
        assert_eq!(plan(&empty), Step::Create, "a blank host id is no host");
        let mut observe_only = obj(None);
        observe_only.spec.management_policy = crate::api::ManagementPolicy::ObserveOnly;
        assert_eq!(plan(&observe_only), Step::WaitForSpecChange, "never rents");
        observe_only.spec.host_id = Some("h4".into());
        assert_eq!(plan(&observe_only), Step::Adopt("h4".into()));
    }

    #[test]
    fn a_pause_waits_for_a_pending_create_only() {
        let pause = |mut o: RentedHost| {
            o.metadata.annotations =
                Some([(PAUSED_ANNOTATION.to_string(), "true".to_string())].into());
            o
        };
        assert_eq!(plan(&pause(obj(None))), Step::Paused);
        assert_eq!(plan(&pause(with_host("h1", None))), Step::Paused);
        let mut deleting = pause(with_host("h1", None));
        deleting.metadata.deletion_timestamp = Some(Time(t0()));
        assert_eq!(plan(&deleting), Step::Paused, "no release while paused");
        let pending = pause(obj(Some(pending(&obj(None)))));
        assert_eq!(plan(&pending), Step::ResolvePending, "money first");
    }
}
