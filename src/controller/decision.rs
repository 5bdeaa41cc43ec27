//! The reconcile decision, as pure functions of (object, what the provider said, now):
//! which step comes next, and the status, event and requeue each answer leads to.
//! No I/O here; `reconcile.rs` performs the steps.

use super::reason::Reason;
use super::resolution::Resolution;
use crate::api::{
    CREATE_NOT_RENTED_ANNOTATION, ConditionType, CreatePending, CreateRequest, FINALIZER,
    LastError, ObservedHost, Phase, PowerState, REBOOT_ANNOTATION, RentedHost, RentedHostStatus,
    set_condition,
};
use crate::provider::{Host, HostStatus, ProviderError, explain};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

/// What the reconciler does next for an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    AddFinalizer,
    /// The object is being deleted.
    Finalize,
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

/// An event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
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
    if obj.metadata.deletion_timestamp.is_some() {
        return Step::Finalize;
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
    let refused_for_this_spec = status
        .last_error
        .as_ref()
        .is_some_and(|e| e.reason == Reason::TypeMismatch.as_str())
        && status.observed_generation == obj.metadata.generation;
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

fn time(now: Timestamp) -> Time {
    Time(now)
}

fn base(obj: &RentedHost) -> RentedHostStatus {
    let mut status = obj.status.clone().unwrap_or_default();
    status.observed_generation = obj.metadata.generation;
    status
}

fn conditions(
    status: &mut RentedHostStatus,
    obj: &RentedHost,
    now: Timestamp,
    rented: (bool, &str, &str),
    ready: (bool, &str, &str),
    synced: (bool, &str, &str),
) {
    set(
        status,
        obj,
        ConditionType::Rented,
        rented.0,
        rented.1,
        rented.2,
        now,
    );
    set(
        status,
        obj,
        ConditionType::Ready,
        ready.0,
        ready.1,
        ready.2,
        now,
    );
    set(
        status,
        obj,
        ConditionType::Synced,
        synced.0,
        synced.1,
        synced.2,
        now,
    );
}

fn last_error(reason: Reason, error: &ProviderError) -> LastError {
    LastError {
        code: error.code(),
        reason: reason.as_str().to_string(),
        message: match error {
            ProviderError::Business { code, .. } => {
                format!("provider code {code}: {}", explain(*code))
            }
            other => other.to_string(),
        },
        provider_message: error.provider_message().map(str::to_string),
        trace_id: error.trace_id().map(str::to_string),
    }
}

/// An error found by the controller itself (no provider code).
fn local_error(reason: Reason, message: impl Into<String>) -> LastError {
    LastError {
        code: None,
        reason: reason.as_str().into(),
        message: message.into(),
        provider_message: None,
        trace_id: None,
    }
}

/// Reports `e` on every condition with `reason`, and retries per the reason's row.
fn fail_all(
    obj: &RentedHost,
    mut status: RentedHostStatus,
    reason: Reason,
    e: LastError,
    phase: Phase,
    now: Timestamp,
) -> Transition {
    let msg = error_message(&e);
    let note = error_note(&obj.status.clone().unwrap_or_default(), &e);
    status.last_error = Some(e);
    status.phase = Some(phase);
    let r = reason.as_str();
    conditions(
        &mut status,
        obj,
        now,
        (false, r, &msg),
        (false, r, &msg),
        (false, r, &msg),
    );
    Transition {
        status,
        note,
        requeue: Requeue::Retry(reason),
    }
}

/// The object cannot progress until a person acts: phase Failed, every condition False.
fn stopped_for(
    obj: &RentedHost,
    status: RentedHostStatus,
    reason: Reason,
    msg: String,
    now: Timestamp,
) -> Transition {
    fail_all(
        obj,
        status,
        reason,
        local_error(reason, msg),
        Phase::Failed,
        now,
    )
}

/// Sets one condition of `status`.
fn set(
    status: &mut RentedHostStatus,
    obj: &RentedHost,
    type_: ConditionType,
    ok: bool,
    reason: &str,
    msg: &str,
    now: Timestamp,
) {
    set_condition(
        &mut status.conditions,
        type_,
        ok,
        reason,
        msg,
        obj.metadata.generation,
        time(now),
    );
}

fn error_message(e: &LastError) -> String {
    let mut message = e.message.clone();
    if let Some(msg) = e.provider_message.as_deref().filter(|m| !m.is_empty()) {
        message.push_str(&format!(" (provider: {msg:?}"));
        if let Some(trace) = &e.trace_id {
            message.push_str(&format!(", traceId {trace}"));
        }
        message.push(')');
    }
    message
}

/// A warning note, unless the same error was already reported.
fn error_note(before: &RentedHostStatus, error: &LastError) -> Option<Note> {
    let repeated = before
        .last_error
        .as_ref()
        .is_some_and(|b| b.reason == error.reason && b.code == error.code);
    (!repeated).then(|| Note {
        warning: true,
        reason: reason_label(&error.reason),
        message: error_message(error),
    })
}

fn reason_label(reason: &str) -> &'static str {
    reason
        .parse::<Reason>()
        .map_or(Reason::ProviderError.as_str(), Reason::as_str)
}

/// The status recorded (and confirmed by the API server) before createRent is called.
/// `budget` bounds the recording and the call together: its end is recorded as the
/// pending create's deadline.
pub fn creating(obj: &RentedHost, now: Timestamp, budget: Duration) -> RentedHostStatus {
    let mut status = base(obj);
    status.create_pending = Some(CreatePending {
        since: now.to_string(),
        request: Some(CreateRequest::of(&obj.spec)),
        call_ended: None,
        deadline: Some((now + budget).to_string()),
        asked_at: None,
    });
    status.create_attempts = Some(status.create_attempts.unwrap_or(0) + 1);
    status.phase = Some(Phase::Creating);
    let msg = "calling createRent";
    conditions(
        &mut status,
        obj,
        now,
        (false, Reason::Creating.as_str(), msg),
        (false, Reason::Creating.as_str(), msg),
        (true, Reason::Creating.as_str(), msg),
    );
    status
}

fn rented(
    obj: &RentedHost,
    mut status: RentedHostStatus,
    id: &str,
    how: &str,
    now: Timestamp,
) -> RentedHostStatus {
    status.host_id = Some(id.to_string());
    status.create_pending = None;
    status.last_error = None;
    status.phase = Some(Phase::Provisioning);
    let msg = format!("host {id} {how}");
    conditions(
        &mut status,
        obj,
        now,
        (true, Reason::Rented.as_str(), &msg),
        (
            false,
            Reason::Provisioning.as_str(),
            "waiting for the host to run",
        ),
        (true, Reason::Rented.as_str(), &msg),
    );
    status
}

/// The answer of createRent, given the status recorded by [`creating`].
pub fn after_create(
    obj: &RentedHost,
    recorded: &RentedHostStatus,
    answer: &Result<String, ProviderError>,
    now: Timestamp,
) -> Transition {
    let mut view = obj.clone();
    view.status = Some(recorded.clone());
    match answer {
        Ok(id) => {
            let s = &obj.spec;
            let note = Note {
                warning: false,
                reason: "Created",
                message: format!(
                    "rented host {id} (package {}, image {}, {} x {:?})",
                    s.package_id, s.image_id, s.period.count, s.period.unit
                ),
            };
            Transition {
                status: rented(&view, recorded.clone(), id, "rented", now),
                note: Some(note),
                requeue: Requeue::Observe { transitional: true },
            }
        }
        Err(error) if error.is_proven_refusal() => refused(&view, error, now),
        Err(error) => {
            // The host may exist: keep createPending, so that no new create happens until
            // the account's hosts have been checked.
            let mut status = recorded.clone();
            if let Some(pending) = status.create_pending.as_mut() {
                pending.call_ended = Some(now.to_string());
            }
            let e = LastError {
                message: format!(
                    "createRent outcome unknown ({error}); checking the account's hosts before any new create"
                ),
                ..last_error(Reason::AwaitingCreateOutcome, error)
            };
            let note = error_note(&obj.status.clone().unwrap_or_default(), &e);
            let msg = error_message(&e);
            status.last_error = Some(e);
            conditions(
                &mut status,
                &view,
                now,
                (false, Reason::AwaitingCreateOutcome.as_str(), &msg),
                (false, Reason::AwaitingCreateOutcome.as_str(), &msg),
                (false, Reason::AwaitingCreateOutcome.as_str(), &msg),
            );
            Transition {
                status,
                note,
                requeue: Requeue::Retry(Reason::AwaitingCreateOutcome),
            }
        }
    }
}

/// A proven refusal of createRent: no host exists; the retry table applies.
fn refused(view: &RentedHost, error: &ProviderError, now: Timestamp) -> Transition {
    let reason = Reason::of(error);
    let mut status = view.status.clone().unwrap_or_default();
    status.create_pending = None;
    let phase = if reason.is_terminal() {
        Phase::Failed
    } else {
        Phase::Pending
    };
    fail_all(view, status, reason, last_error(reason, error), phase, now)
}

/// The step after looking for the host of an unanswered createRent.
pub fn after_resolution(
    obj: &RentedHost,
    found: &Resolution,
    since: Timestamp,
    grace: Duration,
    now: Timestamp,
) -> Transition {
    let mut status = base(obj);
    // Nothing was rented (by the user's word, or after the grace period): create again.
    let create_again = |mut status: RentedHostStatus, reason: &'static str, message: String| {
        status.create_pending = None;
        let note = Note {
            warning: false,
            reason,
            message,
        };
        Transition {
            status,
            note: Some(note),
            requeue: Requeue::After(Duration::ZERO),
        }
    };
    if create_not_rented_allowed(obj) {
        let message = format!(
            "{CREATE_NOT_RENTED_ANNOTATION} names this pending create: a new createRent is allowed"
        );
        return create_again(status, "CreateNotRented", message);
    }
    match found {
        Resolution::Adopt(id) => {
            let note = Note {
                warning: false,
                reason: "AdoptedHost",
                message: format!("adopted host {id}, created by an unanswered createRent"),
            };
            let status = rented(
                obj,
                status,
                id,
                "adopted after an unanswered createRent",
                now,
            );
            Transition {
                status,
                note: Some(note),
                requeue: Requeue::Observe { transitional: true },
            }
        }
        Resolution::NoHost => {
            let waited = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
            if waited >= grace {
                let message = format!(
                    "no new host appeared within {}s of the unanswered createRent: creating again",
                    grace.as_secs()
                );
                return create_again(status, "CreateNotCommitted", message);
            }
            let msg = "waiting for the provider to show the host of an unanswered createRent";
            let r = Reason::AwaitingCreateOutcome.as_str();
            status.phase = Some(Phase::Creating);
            conditions(
                &mut status,
                obj,
                now,
                (false, r, msg),
                (false, r, msg),
                (true, r, msg),
            );
            Transition {
                status,
                note: None,
                requeue: Requeue::After(grace - waited),
            }
        }
        Resolution::Ambiguous(many) => {
            let since = status
                .create_pending
                .as_ref()
                .map(|p| p.since.clone())
                .unwrap_or_default();
            if let Some(pending) = status.create_pending.as_mut() {
                pending.asked_at.get_or_insert_with(|| now.to_string());
            }
            let msg = format!(
                "createRent's outcome is unknown and more unclaimed hosts match than creates were waiting for them ({}; someone else rents on this account?): set spec.hostId to the right one, or annotate the object with {CREATE_NOT_RENTED_ANNOTATION}={since} to allow a new create",
                many.join(", ")
            );
            stopped_for(obj, status, Reason::CreateOutcomeUnknown, msg, now)
        }
    }
}

fn observed(host: &Host) -> ObservedHost {
    let rfc3339 = |ms: Option<i64>| {
        ms.and_then(|m| Timestamp::from_millisecond(m).ok())
            .map(|t| t.to_string())
    };
    ObservedHost {
        status: host.host_status().map(|s| s.name().to_string()),
        address: host.address.clone(),
        port: host.port,
        operating_system: host.operating_system.clone(),
        cpu: host.cpu,
        memory_gb: host.memory,
        disk_gb: host.rigid_disk,
        created_at: rfc3339(host.create_time),
        expires_at: rfc3339(host.expiration_time),
    }
}

/// The object's state given its host as the provider reports it (`None`: not in the account).
pub fn after_observe(
    obj: &RentedHost,
    id: &str,
    host: Option<&Host>,
    now: Timestamp,
) -> Transition {
    let mut status = base(obj);
    let before = obj.status.clone().unwrap_or_default();
    status.host_id = Some(id.to_string());
    status.create_pending = None;
    let Some(host) = host else {
        let msg = format!(
            "host {id} is not in the provider account (released outside the operator?); it is not rented again"
        );
        let e = local_error(Reason::HostNotFound, msg.clone());
        let note = error_note(&before, &e);
        status.last_error = Some(e);
        status.phase = Some(Phase::Failed);
        let r = Reason::HostNotFound.as_str();
        conditions(
            &mut status,
            obj,
            now,
            (true, Reason::Rented.as_str(), &format!("host {id}")),
            (false, r, &msg),
            (true, Reason::Observed.as_str(), "host observed"),
        );
        return Transition {
            status,
            note,
            requeue: Requeue::Retry(Reason::HostNotFound),
        };
    };
    status.last_error = None;
    status.host = Some(observed(host));
    let host_status = host.host_status();
    let (phase, reason) = match host_status {
        Some(HostStatus::Running | HostStatus::Billing) => (Phase::Running, Reason::Running),
        Some(HostStatus::Starting) if before.phase == Some(Phase::Provisioning) => {
            (Phase::Provisioning, Reason::Provisioning)
        }
        Some(HostStatus::Starting) => (Phase::Provisioning, Reason::Starting),
        Some(HostStatus::Stopping) => (Phase::Stopped, Reason::Stopping),
        Some(HostStatus::Stopped) => (Phase::Stopped, Reason::Stopped),
        Some(HostStatus::Expired) => (Phase::Expired, Reason::Expired),
        None => (
            before.phase.unwrap_or(Phase::Provisioning),
            Reason::Provisioning,
        ),
    };
    let want = obj.spec.power_state;
    let ready = matches!(
        (want, phase),
        (PowerState::Running, Phase::Running) | (PowerState::Stopped, Phase::Stopped)
    ) && host_status != Some(HostStatus::Stopping);
    let msg = match host_status {
        Some(s) => format!("host {id} is {}", s.name().to_lowercase()),
        None => format!("host {id} reports an unknown status"),
    };
    status.phase = Some(phase);
    conditions(
        &mut status,
        obj,
        now,
        (true, Reason::Rented.as_str(), &format!("host {id}")),
        (ready, reason.as_str(), &msg),
        (true, Reason::Observed.as_str(), "host observed"),
    );
    let note = (before.phase != Some(phase) && before.phase.is_some()).then(|| Note {
        warning: phase == Phase::Expired,
        reason: reason.as_str(),
        message: msg.clone(),
    });
    let transitional = matches!(
        host_status,
        Some(HostStatus::Starting | HostStatus::Stopping) | None
    );
    Transition {
        status,
        note,
        requeue: Requeue::Observe { transitional },
    }
}

/// Adoption of `spec.hostId`: the host must be in the account and claimed by no other object.
pub fn after_adopt(
    obj: &RentedHost,
    id: &str,
    host: Option<&Host>,
    claimed_by_other: Option<&str>,
    now: Timestamp,
) -> Transition {
    if let Some(other) = claimed_by_other {
        let msg = format!(
            "host {id} is already claimed by RentedHost {other}; one host belongs to one object"
        );
        return stopped_for(obj, base(obj), Reason::HostClaimed, msg, now);
    }
    match host {
        None => {
            let msg = format!("spec.hostId {id} is not a host of the provider account");
            stopped_for(obj, base(obj), Reason::HostNotFound, msg, now)
        }
        Some(host) => {
            let mut view = obj.clone();
            let mut status = base(obj);
            status.host_id = Some(id.to_string());
            status.create_pending = None;
            status.phase = Some(Phase::Provisioning);
            view.status = Some(status);
            let mut t = after_observe(&view, id, Some(host), now);
            t.note = Some(Note {
                warning: false,
                reason: "AdoptedHost",
                message: format!("adopted existing host {id} from spec.hostId"),
            });
            t
        }
    }
}

/// A provider call failed while observing, adopting or resolving: report it, keep the rest.
pub fn provider_failed(obj: &RentedHost, error: &ProviderError, now: Timestamp) -> Transition {
    let reason = Reason::of(error);
    let mut status = base(obj);
    let before = obj.status.clone().unwrap_or_default();
    let e = last_error(reason, error);
    let msg = error_message(&e);
    let note = error_note(&before, &e);
    status.last_error = Some(e);
    let r = reason.as_str();
    set(&mut status, obj, ConditionType::Synced, false, r, &msg, now);
    if status.host_id.is_none() {
        set(&mut status, obj, ConditionType::Ready, false, r, &msg, now);
        set(&mut status, obj, ConditionType::Rented, false, r, &msg, now);
        if status.phase.is_none() {
            status.phase = Some(Phase::Pending);
        }
    }
    Transition {
        status,
        note,
        requeue: Requeue::Retry(reason),
    }
}

/// The credentials now name another account than the one the host (or the pending create)
/// belongs to: nothing is done with them, and the user is told how to get back.
pub fn account_changed(
    obj: &RentedHost,
    owner: &str,
    now_named: &str,
    now: Timestamp,
) -> Transition {
    let what = match obj.status.as_ref().and_then(|s| nonempty(&s.host_id)) {
        Some(id) => format!("host {id}"),
        None => "the pending createRent".to_string(),
    };
    let problem = format!(
        "{what} belongs to provider account {owner}, but the credentials now name account {now_named}: point spec.credentialsSecretRef (or the operator's Secret) back at account {owner}; nothing is created, looked up or released with the other account"
    );
    let mut t = credentials_missing(obj, &problem, now);
    let e = local_error(Reason::CredentialsAccountChanged, problem.clone());
    t.note = error_note(&obj.status.clone().unwrap_or_default(), &e);
    t.status.last_error = Some(e);
    let r = Reason::CredentialsAccountChanged.as_str();
    set(
        &mut t.status,
        obj,
        ConditionType::Synced,
        false,
        r,
        &problem,
        now,
    );
    t.requeue = Requeue::Retry(Reason::CredentialsAccountChanged);
    t
}

/// The credentials Secret is missing or lacks a key.
pub fn credentials_missing(obj: &RentedHost, problem: &str, now: Timestamp) -> Transition {
    let mut status = base(obj);
    let before = obj.status.clone().unwrap_or_default();
    let e = local_error(Reason::CredentialsMissing, problem.to_string());
    let note = error_note(&before, &e);
    status.last_error = Some(e);
    let r = Reason::CredentialsMissing.as_str();
    set(
        &mut status,
        obj,
        ConditionType::Synced,
        false,
        r,
        problem,
        now,
    );
    if status.host_id.is_none() {
        set(
            &mut status,
            obj,
            ConditionType::Ready,
            false,
            r,
            problem,
            now,
        );
        set(
            &mut status,
            obj,
            ConditionType::Rented,
            false,
            r,
            problem,
            now,
        );
        status.phase = Some(Phase::Pending);
    }
    Transition {
        status,
        note,
        requeue: Requeue::Retry(Reason::CredentialsMissing),
    }
}

/// What releasing the host on deletion came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Nothing to release (Orphan, or no host): the finalizer can go.
    NotNeeded,
    /// The provider deleted the host, or it is gone from the account.
    Released,
    /// The host is still there.
    Failed(Option<ProviderError>),
}

/// What deletion does with the host of an object, given its policy.
pub fn release_needed(obj: &RentedHost) -> Option<String> {
    let keep = obj.spec.deletion_policy == crate::api::DeletionPolicy::Orphan;
    let id = obj.status.as_ref().and_then(|s| nonempty(&s.host_id));
    id.filter(|_| !keep)
}

/// The deletion step's outcome: `None` status means remove the finalizer.
pub fn after_release(
    obj: &RentedHost,
    release: &Release,
    now: Timestamp,
) -> (Option<Transition>, Option<Note>) {
    let id = obj
        .status
        .as_ref()
        .and_then(|s| nonempty(&s.host_id))
        .unwrap_or_default();
    match release {
        Release::NotNeeded => {
            let note = (!id.is_empty()).then(|| Note {
                warning: false,
                reason: "Orphaned",
                message: format!("host {id} kept on the provider (deletionPolicy Orphan)"),
            });
            (None, note)
        }
        Release::Released => (
            None,
            Some(Note {
                warning: false,
                reason: "Released",
                message: format!("host {id} released"),
            }),
        ),
        Release::Failed(error) => {
            let mut status = base(obj);
            let e = match error {
                Some(err) => LastError {
                    reason: Reason::ReleaseFailed.as_str().into(),
                    message: format!("releasing host {id} failed: {err}"),
                    ..last_error(Reason::ReleaseFailed, err)
                },
                None => local_error(
                    Reason::ReleaseFailed,
                    format!("the provider did not delete host {id}"),
                ),
            };
            let msg = error_message(&e);
            let note = error_note(&obj.status.clone().unwrap_or_default(), &e);
            status.last_error = Some(e);
            status.phase = Some(Phase::Deleting);
            let r = Reason::ReleaseFailed.as_str();
            set(&mut status, obj, ConditionType::Synced, false, r, &msg, now);
            set(&mut status, obj, ConditionType::Ready, false, r, &msg, now);
            (
                Some(Transition {
                    status,
                    note: None,
                    requeue: Requeue::Retry(Reason::ReleaseFailed),
                }),
                note,
            )
        }
    }
}

/// Whether the provider's view of the host differs from what the object shows: the poll
/// triggers a reconcile only then.
pub fn host_changed(obj: &RentedHost, host: Option<&Host>) -> bool {
    let status = obj.status.clone().unwrap_or_default();
    match host {
        Some(host) => status.host.as_ref() != Some(&observed(host)),
        None => status
            .last_error
            .as_ref()
            .is_none_or(|e| e.reason != Reason::HostNotFound.as_str()),
    }
}

/// Whether the object's host is changing state (or not yet seen since it was rented), so
/// that it is polled at the fast interval.
pub fn in_motion(obj: &RentedHost) -> bool {
    let Some(status) = obj.status.as_ref() else {
        return false;
    };
    if status.host_id.is_none() {
        return false;
    }
    let host = status.host.as_ref().and_then(|h| h.status.as_deref());
    let ready_reason = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.as_str());
    status.phase == Some(Phase::Provisioning)
        || matches!(host, None | Some("Starting") | Some("Stopping"))
        || matches!(ready_reason, Some("Starting" | "Stopping" | "Provisioning"))
}

/// The power operation the spec asks of this host: `Some(true)` start, `Some(false)` stop.
pub fn power_action(obj: &RentedHost, host: &Host) -> Option<bool> {
    match (obj.spec.power_state, host.host_status()?) {
        (PowerState::Running, HostStatus::Stopped) => Some(true),
        (PowerState::Stopped, HostStatus::Running | HostStatus::Billing) => Some(false),
        _ => None,
    }
}

/// The answer of `operate`, folded into the observation's transition.
pub fn after_power(
    obj: &RentedHost,
    observed: Transition,
    start: bool,
    answer: &Result<bool, ProviderError>,
    now: Timestamp,
) -> Transition {
    let mut t = observed;
    let id = t.status.host_id.clone().unwrap_or_default();
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
                "{verb} host {id} for spec.powerState {:?}",
                obj.spec.power_state
            );
            set(
                &mut t.status,
                obj,
                ConditionType::Ready,
                false,
                reason.as_str(),
                &msg,
                now,
            );
            if answer.is_ok() {
                t.note = Some(Note {
                    warning: false,
                    reason: if start { "PowerOn" } else { "PowerOff" },
                    message: msg,
                });
            }
            t.requeue = Requeue::Observe { transitional: true };
        }
        Err(error) => {
            let verb = if start { "start" } else { "stop" };
            let (reason, msg) =
                operation_failed(obj, &mut t, &format!("{verb} host {id}"), error, now);
            set(
                &mut t.status,
                obj,
                ConditionType::Ready,
                false,
                reason.as_str(),
                &msg,
                now,
            );
            t.requeue = Requeue::Retry(reason);
        }
    }
    t
}

/// A refused or failed host operation: `lastError`, its event and `Synced=False`.
fn operation_failed(
    obj: &RentedHost,
    t: &mut Transition,
    what: &str,
    error: &ProviderError,
    now: Timestamp,
) -> (Reason, String) {
    let reason = Reason::of(error);
    let plain = last_error(reason, error);
    let e = LastError {
        message: format!("cannot {what}: {}", plain.message),
        ..plain
    };
    let msg = error_message(&e);
    t.note = error_note(&obj.status.clone().unwrap_or_default(), &e);
    t.status.last_error = Some(e);
    set(
        &mut t.status,
        obj,
        ConditionType::Synced,
        false,
        reason.as_str(),
        &msg,
        now,
    );
    (reason, msg)
}

/// A reboot request (annotation value) not yet acted on.
pub fn reboot_due(obj: &RentedHost) -> Option<String> {
    let requested = obj
        .metadata
        .annotations
        .as_ref()?
        .get(REBOOT_ANNOTATION)?
        .trim()
        .to_string();
    let handled = obj
        .status
        .as_ref()
        .and_then(|s| s.last_reboot_request.as_deref());
    (!requested.is_empty() && handled != Some(requested.as_str())).then_some(requested)
}

/// The answer of `reboot` for request `value`, folded into the observation's transition.
pub fn after_reboot(
    obj: &RentedHost,
    observed: Transition,
    value: &str,
    answer: &Result<bool, ProviderError>,
    now: Timestamp,
) -> Transition {
    let mut t = observed;
    let id = t.status.host_id.clone().unwrap_or_default();
    match answer {
        Ok(_) => {
            t.status.last_reboot_request = Some(value.to_string());
            let msg = format!("rebooting host {id} (requested at {value})");
            set(
                &mut t.status,
                obj,
                ConditionType::Ready,
                false,
                Reason::Starting.as_str(),
                &msg,
                now,
            );
            t.note = Some(Note {
                warning: false,
                reason: "Rebooting",
                message: msg,
            });
            t.requeue = Requeue::Observe { transitional: true };
        }
        Err(error) => {
            let (reason, _) =
                operation_failed(obj, &mut t, &format!("reboot host {id}"), error, now);
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

/// The connection Secret's name belongs to a Secret this object does not control: the
/// login is not written, and the user is told to pick another name.
pub fn connection_secret_taken(
    obj: &RentedHost,
    mut t: Transition,
    name: &str,
    now: Timestamp,
) -> Transition {
    let e = local_error(
        Reason::ConnectionSecretConflict,
        format!(
            "Secret {name} exists and is not this object's connection Secret; the operator does not take it over: set spec.connectionSecretName to a free name, or delete that Secret"
        ),
    );
    let msg = error_message(&e);
    t.note = t
        .note
        .or_else(|| error_note(&obj.status.clone().unwrap_or_default(), &e));
    t.status.last_error = Some(e);
    let r = Reason::ConnectionSecretConflict.as_str();
    set(
        &mut t.status,
        obj,
        ConditionType::Synced,
        false,
        r,
        &msg,
        now,
    );
    t.requeue = Requeue::Retry(Reason::ConnectionSecretConflict);
    t
}

/// Name of the object's connection Secret.
pub fn connection_secret_name(obj: &RentedHost) -> String {
    nonempty(&obj.spec.connection_secret_name).unwrap_or_else(|| {
        format!(
            "{}-connection",
            obj.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

/// The connection Secret's data for a host: its login and where to connect.
pub fn connection_data(host: &Host) -> std::collections::BTreeMap<String, String> {
    let mut data = std::collections::BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            data.insert(k.to_string(), v);
        }
    };
    put("hostAccount", host.host_account.clone());
    put("hostPw", host.host_pw.clone());
    put("address", host.address.clone());
    put("port", host.port.map(|p| p.to_string()));
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RentedHostSpec, RentedHostStatus};
    use crate::provider::HostStatus;

    fn obj(status: Option<RentedHostStatus>) -> RentedHost {
        let spec: RentedHostSpec = serde_json::from_value(serde_json::json!({
            "packageId": "teTapaSUFq", "imageId": "507", "period": {"count": 5, "unit": "Month"}
        }))
        .unwrap();
        let mut o = RentedHost::new("rh", spec);
        o.metadata.namespace = Some("ns".into());
        o.metadata.generation = Some(1);
        o.metadata.finalizers = Some(vec![FINALIZER.into()]);
        o.status = status;
        o
    }

    fn t0() -> Timestamp {
        "2026-11-26T07:00:00Z".parse().unwrap()
    }

    fn later(secs: i64) -> Timestamp {
        t0() + jiff::SignedDuration::from_secs(secs)
    }

    fn cond(s: &RentedHostStatus, t: ConditionType) -> (String, String) {
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == t.as_str())
            .expect("condition set");
        (c.status.clone(), c.reason.clone())
    }

    fn business(code: i64) -> ProviderError {
        ProviderError::Business {
            code,
            message: format!("msg {code}"),
            trace_id: Some(format!("trace-{code}")),
        }
    }

    fn pending(o: &RentedHost) -> RentedHostStatus {
        creating(o, t0(), Duration::from_secs(30))
    }

    #[test]
    fn plan_covers_every_state() {
        let mut o = obj(None);
        o.metadata.finalizers = None;
        assert_eq!(plan(&o), Step::AddFinalizer);
        let o = obj(None);
        assert_eq!(plan(&o), Step::Create);
        let o = obj(Some(RentedHostStatus {
            host_id: Some("h1".into()),
            ..Default::default()
        }));
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
        let empty = obj(Some(RentedHostStatus {
            host_id: Some("  ".into()),
            ..Default::default()
        }));
        assert_eq!(plan(&empty), Step::Create, "a blank host id is no host");
    }

    #[test]
    fn creating_records_pending_before_the_call() {
        let s = creating(&obj(None), t0(), Duration::from_secs(30));
        let recorded = s.create_pending.as_ref().unwrap();
        assert_eq!(recorded.since, "2026-11-26T07:00:00Z");
        assert_eq!(
            recorded.request.as_ref(),
            Some(&CreateRequest::of(&obj(None).spec)),
            "the request is recorded, to match its host against"
        );
        assert!(recorded.call_ended.is_none());
        assert_eq!(s.create_attempts, Some(1));
        assert_eq!(s.phase, Some(Phase::Creating));
        assert_eq!(
            cond(&s, ConditionType::Ready),
            ("False".into(), "Creating".into())
        );
        let again = creating(&obj(Some(s)), later(10), Duration::from_secs(30));
        assert_eq!(again.create_attempts, Some(2));
        assert!(again.create_pending.as_ref().unwrap().asked_at.is_none());
        assert_eq!(
            again.create_pending.unwrap().deadline.as_deref(),
            Some("2026-11-26T07:00:40Z")
        );
    }

    #[test]
    fn a_host_id_answer_rents() {
        let o = obj(None);
        let t = after_create(&o, &pending(&o), &Ok("dyMFQQgHIW".into()), t0());
        assert_eq!(t.status.host_id.as_deref(), Some("dyMFQQgHIW"));
        assert!(t.status.create_pending.is_none());
        assert!(t.status.last_error.is_none());
        assert_eq!(t.status.phase, Some(Phase::Provisioning));
        assert_eq!(
            cond(&t.status, ConditionType::Rented),
            ("True".into(), "Rented".into())
        );
        assert_eq!(
            cond(&t.status, ConditionType::Ready),
            ("False".into(), "Provisioning".into())
        );
        assert_eq!(cond(&t.status, ConditionType::Synced).0, "True");
        assert_eq!(t.note.unwrap().reason, "Created");
        assert_eq!(t.requeue, Requeue::Observe { transitional: true });
    }

    #[test]
    fn every_business_code_of_the_table_clears_pending_and_is_explained() {
        let table: [(i64, Reason, Phase); 8] = [
            (6005, Reason::ProviderCreating, Phase::Pending),
            (6002, Reason::InsufficientResources, Phase::Pending),
            (1037, Reason::RealNameVerificationRequired, Phase::Pending),
            (9000, Reason::WalletError, Phase::Pending),
            (9001, Reason::InsufficientBalance, Phase::Pending),
            (7005, Reason::TypeMismatch, Phase::Failed),
            (401, Reason::CredentialsInvalid, Phase::Failed),
            (1003, Reason::ProviderError, Phase::Pending),
        ];
        for (code, reason, phase) in table {
            let o = obj(None);
            let t = after_create(&o, &pending(&o), &Err(business(code)), t0());
            assert!(
                t.status.create_pending.is_none(),
                "{code}: a proven refusal means no host"
            );
            assert!(t.status.host_id.is_none());
            let e = t.status.last_error.as_ref().unwrap();
            assert_eq!(
                (e.code, e.reason.as_str()),
                (Some(code), reason.as_str()),
                "{code}"
            );
            assert_eq!(
                e.provider_message.as_deref(),
                Some(format!("msg {code}").as_str())
            );
            assert_eq!(
                e.trace_id.as_deref(),
                Some(format!("trace-{code}").as_str())
            );
            assert!(e.message.contains(&code.to_string()) && e.message.contains(explain(code)));
            assert_eq!(t.status.phase, Some(phase), "{code}");
            for c in [
                ConditionType::Ready,
                ConditionType::Rented,
                ConditionType::Synced,
            ] {
                assert_eq!(
                    cond(&t.status, c),
                    ("False".into(), reason.as_str().into()),
                    "{code} {c:?}"
                );
            }
            assert_eq!(t.requeue, Requeue::Retry(reason));
            let note = t.note.expect("a first error is an event");
            assert!(note.warning);
            assert_eq!(note.reason, reason.as_str());
        }
    }

    #[test]
    fn a_repeated_error_is_not_a_new_event_but_a_different_one_is() {
        let o = obj(None);
        let first = after_create(&o, &pending(&o), &Err(business(6002)), t0());
        let o2 = obj(Some(first.status));
        let again = after_create(&o2, &pending(&o2), &Err(business(6002)), later(30));
        assert!(again.note.is_none());
        let o3 = obj(Some(again.status));
        let other = after_create(&o3, &pending(&o3), &Err(business(9001)), later(60));
        assert_eq!(other.note.unwrap().reason, "InsufficientBalance");
    }

    #[test]
    fn unknown_outcomes_keep_create_pending() {
        for error in [
            ProviderError::Transport("timed out".into()),
            ProviderError::HttpStatus(502),
            ProviderError::Malformed("html".into()),
        ] {
            let o = obj(None);
            let recorded = pending(&o);
            let t = after_create(&o, &recorded, &Err(error.clone()), t0());
            let kept = t.status.create_pending.clone().expect("the host may exist");
            let asked = recorded.create_pending.clone().unwrap();
            assert_eq!(
                (&kept.since, &kept.request),
                (&asked.since, &asked.request),
                "{error}"
            );
            assert!(t.status.host_id.is_none());
            assert_eq!(
                t.status.last_error.as_ref().unwrap().reason,
                "AwaitingCreateOutcome"
            );
            assert_eq!(
                cond(&t.status, ConditionType::Ready),
                ("False".into(), "AwaitingCreateOutcome".into())
            );
            assert_eq!(t.requeue, Requeue::Retry(Reason::AwaitingCreateOutcome));
            assert_eq!(
                plan(&obj(Some(t.status))),
                Step::ResolvePending,
                "{error}: never createRent again directly"
            );
        }
    }

    fn host(id: &str, created: Timestamp, cpu: i64) -> Host {
        Host {
            id: Some(id.into()),
            cpu: Some(cpu),
            memory: Some(32),
            rigid_disk: Some(128),
            gpu_number: Some(1),
            create_time: Some(created.as_millisecond()),
            status: Some("2".into()),
            ..Default::default()
        }
    }

    #[test]
    fn resolution_adopts_one_waits_for_none_and_stops_on_many() {
        let o = obj(Some(pending(&obj(None))));
        let grace = Duration::from_secs(120);
        let one = after_resolution(&o, &Resolution::Adopt("h1".into()), t0(), grace, later(10));
        assert_eq!(one.status.host_id.as_deref(), Some("h1"));
        assert!(one.status.create_pending.is_none());
        assert_eq!(one.note.unwrap().reason, "AdoptedHost");

        let early = after_resolution(&o, &Resolution::NoHost, t0(), grace, later(30));
        assert!(
            early.status.create_pending.is_some(),
            "within the grace period the create may still show up"
        );
        assert_eq!(early.requeue, Requeue::After(Duration::from_secs(90)));
        assert_eq!(
            cond(&early.status, ConditionType::Ready).1,
            "AwaitingCreateOutcome"
        );

        let late = after_resolution(&o, &Resolution::NoHost, t0(), grace, later(121));
        assert!(late.status.create_pending.is_none());
        assert!(late.status.host_id.is_none());
        assert_eq!(late.note.unwrap().reason, "CreateNotCommitted");
        assert_eq!(plan(&obj(Some(late.status))), Step::Create);

        let many = after_resolution(
            &o,
            &Resolution::Ambiguous(vec!["h1".into(), "h2".into()]),
            t0(),
            grace,
            later(10),
        );
        assert!(many.status.host_id.is_none());
        assert!(
            many.status.create_pending.is_some(),
            "no new create while ambiguous"
        );
        assert_eq!(many.status.phase, Some(Phase::Failed));
        assert_eq!(
            cond(&many.status, ConditionType::Ready).1,
            "CreateOutcomeUnknown"
        );
        let msg = &many.status.last_error.as_ref().unwrap().message;
        assert!(
            msg.contains("h1, h2")
                && msg.contains("spec.hostId")
                && msg.contains(CREATE_NOT_RENTED_ANNOTATION)
        );
        assert_eq!(many.requeue, Requeue::Retry(Reason::CreateOutcomeUnknown));
    }

    #[test]
    fn the_create_not_rented_annotation_allows_a_new_create_only_when_it_names_the_asked_create() {
        let annotate = |o: &mut RentedHost, value: &str| {
            o.metadata.annotations =
                Some([(CREATE_NOT_RENTED_ANNOTATION.to_string(), value.to_string())].into());
        };
        let waiting = obj(Some(pending(&obj(None))));
        let since = t0().to_string();
        let ambiguous = Resolution::Ambiguous(vec!["h1".into(), "h2".into()]);
        let grace = Duration::from_secs(120);
        let asked = obj(Some(
            after_resolution(&waiting, &ambiguous, t0(), grace, later(1)).status,
        ));
        for (mut o, value, allowed) in [
            (waiting.clone(), since.as_str(), false),
            (asked.clone(), "true", false),
            (asked.clone(), "2026-11-25T07:00:00Z", false),
            (asked.clone(), since.as_str(), true),
        ] {
            annotate(&mut o, value);
            assert_eq!(create_not_rented_allowed(&o), allowed, "{value}");
            let t = after_resolution(&o, &ambiguous, t0(), grace, later(2));
            assert_eq!(t.status.create_pending.is_none(), allowed, "{value}");
            assert!(t.status.host_id.is_none(), "{value}");
        }
    }

    #[test]
    fn an_unknown_outcome_records_when_the_call_ended() {
        let o = obj(None);
        let t = after_create(
            &o,
            &pending(&o),
            &Err(ProviderError::Transport("timed out".into())),
            later(2),
        );
        let p = t.status.create_pending.unwrap();
        assert_eq!(p.call_ended, Some(later(2).to_string()));
        assert_eq!(p.since, t0().to_string());
    }

    #[test]
    fn observation_maps_host_status_and_power_state_to_phase_and_ready() {
        let cases = [
            (
                HostStatus::Starting,
                PowerState::Running,
                Phase::Provisioning,
                false,
                true,
            ),
            (
                HostStatus::Running,
                PowerState::Running,
                Phase::Running,
                true,
                false,
            ),
            (
                HostStatus::Billing,
                PowerState::Running,
                Phase::Running,
                true,
                false,
            ),
            (
                HostStatus::Stopping,
                PowerState::Stopped,
                Phase::Stopped,
                false,
                true,
            ),
            (
                HostStatus::Stopped,
                PowerState::Stopped,
                Phase::Stopped,
                true,
                false,
            ),
            (
                HostStatus::Stopped,
                PowerState::Running,
                Phase::Stopped,
                false,
                false,
            ),
            (
                HostStatus::Running,
                PowerState::Stopped,
                Phase::Running,
                false,
                false,
            ),
            (
                HostStatus::Expired,
                PowerState::Running,
                Phase::Expired,
                false,
                false,
            ),
        ];
        for (host_status, power, phase, ready, transitional) in cases {
            let mut o = obj(Some(RentedHostStatus {
                host_id: Some("h1".into()),
                phase: Some(Phase::Provisioning),
                ..Default::default()
            }));
            o.spec.power_state = power;
            let mut h = host("h1", t0(), 8);
            h.status = Some(host_status.code().into());
            h.host_pw = Some("secret-pw".into());
            let t = after_observe(&o, "h1", Some(&h), later(5));
            assert_eq!(t.status.phase, Some(phase), "{host_status:?}");
            assert_eq!(
                cond(&t.status, ConditionType::Ready).0 == "True",
                ready,
                "{host_status:?} {power:?}"
            );
            assert_eq!(
                t.requeue,
                Requeue::Observe { transitional },
                "{host_status:?}"
            );
            assert!(
                !serde_json::to_string(&t.status)
                    .unwrap()
                    .contains("secret-pw"),
                "the login never reaches status"
            );
        }
    }

    #[test]
    fn a_host_gone_from_the_account_is_not_found_and_never_rented_again() {
        let o = obj(Some(RentedHostStatus {
            host_id: Some("h1".into()),
            phase: Some(Phase::Running),
            ..Default::default()
        }));
        let t = after_observe(&o, "h1", None, t0());
        assert_eq!(
            cond(&t.status, ConditionType::Ready),
            ("False".into(), "HostNotFound".into())
        );
        assert_eq!(t.status.host_id.as_deref(), Some("h1"));
        assert_eq!(plan(&obj(Some(t.status))), Step::Observe("h1".into()));
        assert_eq!(t.note.unwrap().reason, "HostNotFound");
    }

    #[test]
    fn adoption_checks_claims_and_existence() {
        let mut o = obj(None);
        o.spec.host_id = Some("h1".into());
        let claimed = after_adopt(&o, "h1", None, Some("ns/other"), t0());
        assert_eq!(cond(&claimed.status, ConditionType::Ready).1, "HostClaimed");
        assert!(claimed.status.host_id.is_none());
        let missing = after_adopt(&o, "h1", None, None, t0());
        assert_eq!(
            cond(&missing.status, ConditionType::Ready).1,
            "HostNotFound"
        );
        let h = host("h1", t0(), 8);
        let adopted = after_adopt(&o, "h1", Some(&h), None, t0());
        assert_eq!(adopted.status.host_id.as_deref(), Some("h1"));
        assert_eq!(adopted.note.unwrap().reason, "AdoptedHost");
    }

    #[test]
    fn release_follows_the_deletion_policy() {
        let mut o = obj(Some(RentedHostStatus {
            host_id: Some("h1".into()),
            ..Default::default()
        }));
        assert_eq!(release_needed(&o), Some("h1".into()));
        let (t, note) = after_release(&o, &Release::Released, t0());
        assert!(t.is_none());
        assert_eq!(note.unwrap().reason, "Released");
        let (t, note) = after_release(
            &o,
            &Release::Failed(Some(ProviderError::HttpStatus(502))),
            t0(),
        );
        let t = t.expect("the finalizer stays");
        assert_eq!(cond(&t.status, ConditionType::Synced).1, "ReleaseFailed");
        assert_eq!(t.requeue, Requeue::Retry(Reason::ReleaseFailed));
        assert!(note.unwrap().warning);
        o.spec.deletion_policy = crate::api::DeletionPolicy::Orphan;
        assert_eq!(release_needed(&o), None);
        let (t, note) = after_release(&o, &Release::NotNeeded, t0());
        assert!(t.is_none());
        assert_eq!(note.unwrap().reason, "Orphaned");
        assert_eq!(release_needed(&obj(None)), None);
    }

    #[test]
    fn credentials_of_another_account_are_refused_and_explained() {
        let o = obj(Some(RentedHostStatus {
            host_id: Some("h1".into()),
            account: Some("acct-1".into()),
            phase: Some(Phase::Running),
            ..Default::default()
        }));
        let t = account_changed(&o, "acct-1", "acct-2", t0());
        assert_eq!(t.status.host_id.as_deref(), Some("h1"));
        assert_eq!(
            cond(&t.status, ConditionType::Synced),
            ("False".into(), "CredentialsAccountChanged".into())
        );
        let msg = &t.status.last_error.as_ref().unwrap().message;
        assert!(msg.contains("acct-1") && msg.contains("acct-2") && msg.contains("host h1"));
        assert_eq!(t.note.unwrap().reason, "CredentialsAccountChanged");
    }

    #[test]
    fn missing_credentials_and_failed_observations_keep_what_is_known() {
        let o = obj(Some(RentedHostStatus {
            host_id: Some("h1".into()),
            phase: Some(Phase::Running),
            ..Default::default()
        }));
        let t = credentials_missing(&o, "credentials Secret ns/x not found", t0());
        assert_eq!(t.status.host_id.as_deref(), Some("h1"));
        assert_eq!(t.status.phase, Some(Phase::Running));
        assert_eq!(
            cond(&t.status, ConditionType::Synced).1,
            "CredentialsMissing"
        );
        assert_eq!(t.requeue, Requeue::Retry(Reason::CredentialsMissing));
        let t = provider_failed(&o, &ProviderError::Transport("timed out".into()), t0());
        assert_eq!(t.status.host_id.as_deref(), Some("h1"));
        assert_eq!(
            cond(&t.status, ConditionType::Synced).1,
            "ProviderUnavailable"
        );
        assert_eq!(t.requeue, Requeue::Retry(Reason::ProviderUnavailable));
    }

    #[test]
    fn power_and_reboot_answers() {
        let mut o = obj(Some(RentedHostStatus {
            host_id: Some("h1".into()),
            phase: Some(Phase::Stopped),
            ..Default::default()
        }));
        o.metadata.annotations = Some([(REBOOT_ANNOTATION.to_string(), "v1".to_string())].into());
        let mut h = host("h1", t0(), 8);
        h.status = Some(HostStatus::Stopped.code().into());
        assert_eq!(power_action(&o, &h), Some(true));
        let seen = || after_observe(&o, "h1", Some(&h), t0());
        let started = after_power(&o, seen(), true, &Ok(true), t0());
        assert_eq!(started.note.unwrap().reason, "PowerOn");
        assert_eq!(started.requeue, Requeue::Observe { transitional: true });
        let busy = after_power(&o, seen(), true, &Err(business(6000)), t0());
        assert!(
            busy.note.is_none() && busy.status.last_error.is_none(),
            "6000 means wait"
        );
        let broke = after_power(&o, seen(), true, &Err(business(6003)), t0());
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
        let refused = after_reboot(&o, seen(), "v1", &Err(business(7002)), t0());
        assert_eq!(
            refused.status.last_reboot_request.as_deref(),
            Some("v1"),
            "not running: final for this request"
        );
        assert_eq!(
            cond(&refused.status, ConditionType::Synced).1,
            "HostNotRunning"
        );
        let busy = after_reboot(&o, seen(), "v1", &Err(business(7003)), t0());
        assert!(
            busy.status.last_reboot_request.is_none(),
            "unavailable: retried"
        );
        assert_eq!(busy.requeue, Requeue::Retry(Reason::HostUnavailable));
        let done = after_reboot(&o, seen(), "v1", &Ok(true), t0());
        assert_eq!(done.status.last_reboot_request.as_deref(), Some("v1"));
        let mut after = o.clone();
        after.status = Some(done.status);
        assert_eq!(reboot_due(&after), None, "one reboot per value");
    }
}
