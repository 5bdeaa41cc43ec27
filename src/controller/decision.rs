//! The reconcile decision, as pure functions of (object, what the provider said, now):
//! which step comes next, and the status, event and requeue each answer leads to.
//! No I/O here; `reconcile.rs` performs the steps.

use super::reason::Reason;
use crate::api::{
    CREATE_NOT_RENTED_ANNOTATION, ConditionType, CreatePending, FINALIZER, LastError, ObservedHost,
    Phase, PowerState, RentedHost, RentedHostStatus, set_condition,
};
use crate::provider::{Host, HostStatus, Package, ProviderError, explain};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::HashSet;
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
    /// Only when something changes.
    Never,
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
    if let Some(id) = nonempty(&obj.spec.host_id) {
        return Step::Adopt(id);
    }
    if status.create_pending.is_some() {
        return Step::ResolvePending;
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

/// Whether the user allowed a new create after an ambiguous outcome.
pub fn create_not_rented_allowed(obj: &RentedHost) -> bool {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CREATE_NOT_RENTED_ANNOTATION))
        .is_some_and(|v| v == "true")
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
    let generation = obj.metadata.generation;
    set_condition(
        &mut status.conditions,
        ConditionType::Rented,
        rented.0,
        rented.1,
        rented.2,
        generation,
        time(now),
    );
    set_condition(
        &mut status.conditions,
        ConditionType::Ready,
        ready.0,
        ready.1,
        ready.2,
        generation,
        time(now),
    );
    set_condition(
        &mut status.conditions,
        ConditionType::Synced,
        synced.0,
        synced.1,
        synced.2,
        generation,
        time(now),
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
    ALL_REASONS
        .iter()
        .find(|r| r.as_str() == reason)
        .map_or("ProviderError", |r| r.as_str())
}

const ALL_REASONS: [Reason; 23] = [
    Reason::Creating,
    Reason::CreatePending,
    Reason::InsufficientResources,
    Reason::RealNameVerificationRequired,
    Reason::WalletError,
    Reason::InsufficientBalance,
    Reason::TypeMismatch,
    Reason::CredentialsInvalid,
    Reason::CredentialsMissing,
    Reason::ProviderUnavailable,
    Reason::ProviderError,
    Reason::CreateOutcomeUnknown,
    Reason::AwaitingCreateOutcome,
    Reason::HostNotFound,
    Reason::HostClaimed,
    Reason::Provisioning,
    Reason::Running,
    Reason::Stopped,
    Reason::Stopping,
    Reason::Starting,
    Reason::Expired,
    Reason::ReleaseFailed,
    Reason::Deleting,
];

/// The status recorded (and confirmed by the API server) before createRent is called.
pub fn creating(obj: &RentedHost, now: Timestamp) -> RentedHostStatus {
    let mut status = base(obj);
    status.create_pending = Some(CreatePending {
        since: now.to_string(),
    });
    status.create_attempts = Some(status.create_attempts.unwrap_or(0) + 1);
    status.phase = Some(Phase::Creating);
    let msg = "calling createRent";
    conditions(
        &mut status,
        obj,
        now,
        (false, "Creating", msg),
        (false, "Creating", msg),
        (true, "Creating", msg),
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
        (true, "Rented", &msg),
        (false, "Provisioning", "waiting for the host to run"),
        (true, "Rented", &msg),
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
                (false, "AwaitingCreateOutcome", &msg),
                (false, "AwaitingCreateOutcome", &msg),
                (false, "AwaitingCreateOutcome", &msg),
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
    let before = status.clone();
    status.create_pending = None;
    status.phase = Some(if reason.is_terminal() {
        Phase::Failed
    } else {
        Phase::Pending
    });
    let e = last_error(reason, error);
    let msg = error_message(&e);
    let note = error_note(&before, &e);
    status.last_error = Some(e);
    let r = reason.as_str();
    conditions(
        &mut status,
        view,
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

/// A host that may be the one an unanswered createRent made.
pub fn matches_package(host: &Host, package: &Package) -> bool {
    let same = |a: Option<i64>, b: Option<i64>| a.unwrap_or(0) == b.unwrap_or(0);
    same(host.cpu, package.cpu_number)
        && same(host.memory, package.memory_number)
        && same(host.rigid_disk, package.rigid_disk_number)
        && same(host.gpu_number, package.gpu_number)
}

/// Hosts created since `since - skew`, claimed by no other object, matching the package.
pub fn candidates(
    hosts: &[Host],
    since: Timestamp,
    skew: Duration,
    claimed: &HashSet<String>,
    package: Option<&Package>,
) -> Vec<String> {
    let from = since.as_millisecond() - skew.as_millis() as i64;
    let mut ids: Vec<String> = hosts
        .iter()
        .filter(|h| h.create_time.is_some_and(|t| t >= from))
        .filter(|h| package.is_none_or(|p| matches_package(h, p)))
        .filter_map(|h| h.id.clone())
        .filter(|id| !claimed.contains(id))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The step after looking for the host of an unanswered createRent.
pub fn after_resolution(
    obj: &RentedHost,
    found: &[String],
    since: Timestamp,
    grace: Duration,
    now: Timestamp,
) -> Transition {
    let mut status = base(obj);
    let allowed = create_not_rented_allowed(obj);
    match found {
        [id] if !allowed => {
            let note = Note {
                warning: false,
                reason: "AdoptedHost",
                message: format!("adopted host {id}, created by an unanswered createRent"),
            };
            Transition {
                status: rented(
                    obj,
                    status,
                    id,
                    "adopted after an unanswered createRent",
                    now,
                ),
                note: Some(note),
                requeue: Requeue::Observe { transitional: true },
            }
        }
        [] | [_] if allowed => {
            status.create_pending = None;
            let note = Note {
                warning: false,
                reason: "CreateNotRented",
                message: format!(
                    "{CREATE_NOT_RENTED_ANNOTATION}=true: a new createRent is allowed"
                ),
            };
            Transition {
                status,
                note: Some(note),
                requeue: Requeue::After(Duration::ZERO),
            }
        }
        [] => {
            let waited = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
            if waited >= grace {
                status.create_pending = None;
                let note = Note {
                    warning: false,
                    reason: "CreateNotCommitted",
                    message: format!(
                        "no new host appeared within {}s of the unanswered createRent: creating again",
                        grace.as_secs()
                    ),
                };
                Transition {
                    status,
                    note: Some(note),
                    requeue: Requeue::After(Duration::ZERO),
                }
            } else {
                let msg = "waiting for the provider to show the host of an unanswered createRent";
                status.phase = Some(Phase::Creating);
                conditions(
                    &mut status,
                    obj,
                    now,
                    (false, "AwaitingCreateOutcome", msg),
                    (false, "AwaitingCreateOutcome", msg),
                    (true, "AwaitingCreateOutcome", msg),
                );
                Transition {
                    status,
                    note: None,
                    requeue: Requeue::After(grace - waited),
                }
            }
        }
        many if allowed => {
            let _ = many;
            status.create_pending = None;
            let note = Note {
                warning: false,
                reason: "CreateNotRented",
                message: format!(
                    "{CREATE_NOT_RENTED_ANNOTATION}=true: a new createRent is allowed"
                ),
            };
            Transition {
                status,
                note: Some(note),
                requeue: Requeue::After(Duration::ZERO),
            }
        }
        many => {
            let msg = format!(
                "createRent's outcome is unknown and {} unclaimed hosts match ({}): set spec.hostId to the right one, or annotate the object with {CREATE_NOT_RENTED_ANNOTATION}=true to allow a new create",
                many.len(),
                many.join(", ")
            );
            let e = LastError {
                code: None,
                reason: Reason::CreateOutcomeUnknown.as_str().into(),
                message: msg.clone(),
                provider_message: None,
                trace_id: None,
            };
            let note = error_note(&obj.status.clone().unwrap_or_default(), &e);
            status.last_error = Some(e);
            status.phase = Some(Phase::Failed);
            let r = Reason::CreateOutcomeUnknown.as_str();
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
                requeue: Requeue::Retry(Reason::CreateOutcomeUnknown),
            }
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
        let e = LastError {
            code: None,
            reason: Reason::HostNotFound.as_str().into(),
            message: msg.clone(),
            provider_message: None,
            trace_id: None,
        };
        let note = error_note(&before, &e);
        status.last_error = Some(e);
        status.phase = Some(Phase::Failed);
        let r = Reason::HostNotFound.as_str();
        conditions(
            &mut status,
            obj,
            now,
            (true, "Rented", &format!("host {id}")),
            (false, r, &msg),
            (true, "Observed", "host observed"),
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
        (true, "Rented", &format!("host {id}")),
        (ready, reason.as_str(), &msg),
        (true, "Observed", "host observed"),
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
        let mut status = base(obj);
        let msg = format!(
            "host {id} is already claimed by RentedHost {other}; one host belongs to one object"
        );
        let e = LastError {
            code: None,
            reason: Reason::HostClaimed.as_str().into(),
            message: msg.clone(),
            provider_message: None,
            trace_id: None,
        };
        let note = error_note(&obj.status.clone().unwrap_or_default(), &e);
        status.last_error = Some(e);
        status.phase = Some(Phase::Failed);
        let r = Reason::HostClaimed.as_str();
        conditions(
            &mut status,
            obj,
            now,
            (false, r, &msg),
            (false, r, &msg),
            (false, r, &msg),
        );
        return Transition {
            status,
            note,
            requeue: Requeue::Retry(Reason::HostClaimed),
        };
    }
    match host {
        None => {
            let mut status = base(obj);
            let msg = format!("spec.hostId {id} is not a host of the provider account");
            let e = LastError {
                code: None,
                reason: Reason::HostNotFound.as_str().into(),
                message: msg.clone(),
                provider_message: None,
                trace_id: None,
            };
            let note = error_note(&obj.status.clone().unwrap_or_default(), &e);
            status.last_error = Some(e);
            status.phase = Some(Phase::Failed);
            let r = Reason::HostNotFound.as_str();
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
                requeue: Requeue::Retry(Reason::HostNotFound),
            }
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
    let generation = obj.metadata.generation;
    set_condition(
        &mut status.conditions,
        ConditionType::Synced,
        false,
        r,
        &msg,
        generation,
        time(now),
    );
    if status.host_id.is_none() {
        set_condition(
            &mut status.conditions,
            ConditionType::Ready,
            false,
            r,
            &msg,
            generation,
            time(now),
        );
        set_condition(
            &mut status.conditions,
            ConditionType::Rented,
            false,
            r,
            &msg,
            generation,
            time(now),
        );
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

/// The credentials Secret is missing or lacks a key.
pub fn credentials_missing(obj: &RentedHost, problem: &str, now: Timestamp) -> Transition {
    let mut status = base(obj);
    let before = obj.status.clone().unwrap_or_default();
    let e = LastError {
        code: None,
        reason: Reason::CredentialsMissing.as_str().into(),
        message: problem.to_string(),
        provider_message: None,
        trace_id: None,
    };
    let note = error_note(&before, &e);
    status.last_error = Some(e);
    let r = Reason::CredentialsMissing.as_str();
    let generation = obj.metadata.generation;
    set_condition(
        &mut status.conditions,
        ConditionType::Synced,
        false,
        r,
        problem,
        generation,
        time(now),
    );
    if status.host_id.is_none() {
        set_condition(
            &mut status.conditions,
            ConditionType::Ready,
            false,
            r,
            problem,
            generation,
            time(now),
        );
        set_condition(
            &mut status.conditions,
            ConditionType::Rented,
            false,
            r,
            problem,
            generation,
            time(now),
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
                None => LastError {
                    code: None,
                    reason: Reason::ReleaseFailed.as_str().into(),
                    message: format!("the provider did not delete host {id}"),
                    provider_message: None,
                    trace_id: None,
                },
            };
            let msg = error_message(&e);
            let note = error_note(&obj.status.clone().unwrap_or_default(), &e);
            status.last_error = Some(e);
            status.phase = Some(Phase::Deleting);
            let r = Reason::ReleaseFailed.as_str();
            let generation = obj.metadata.generation;
            set_condition(
                &mut status.conditions,
                ConditionType::Synced,
                false,
                r,
                &msg,
                generation,
                time(now),
            );
            set_condition(
                &mut status.conditions,
                ConditionType::Ready,
                false,
                r,
                &msg,
                generation,
                time(now),
            );
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
