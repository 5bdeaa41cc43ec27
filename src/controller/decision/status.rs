//! The status every transition starts from, conditions and errors as the object shows
//! them, and the transitions of a failed step (provider, credentials, account).

use super::*;

pub(super) fn time(now: Timestamp) -> Time {
    Time(now)
}

pub(super) fn base(obj: &RentedHost) -> RentedHostStatus {
    let mut status = obj.status.clone().unwrap_or_default();
    status.observed_generation = obj.metadata.generation;
    status
}

/// The conditions of `status`, set for `obj`'s generation at `now`.
pub(super) fn conditions_of<'s>(
    status: &'s mut RentedHostStatus,
    obj: &RentedHost,
    now: Timestamp,
) -> Conditions<'s> {
    Conditions::new(&mut status.conditions, obj.metadata.generation, time(now))
}

pub(super) fn last_error(reason: Reason, error: &ProviderError) -> LastError {
    LastError {
        code: error.code(),
        reason,
        // What the provider said is added by `error_message`, once.
        message: error.summary(),
        provider_message: error.provider_message().map(str::to_string),
        trace_id: error.trace_id().map(str::to_string),
    }
}

/// An error found by the controller itself (no provider code).
pub(super) fn local_error(reason: Reason, message: impl Into<String>) -> LastError {
    LastError {
        code: None,
        reason,
        message: message.into(),
        provider_message: None,
        trace_id: None,
    }
}

/// Reports `e` on every condition with `reason`, and retries per the reason's row.
pub(super) fn fail_all(
    obj: &RentedHost,
    mut status: RentedHostStatus,
    e: LastError,
    now: Timestamp,
) -> Transition {
    let reason = e.reason;
    let msg = error_message(&e);
    let note = error_note(&obj.status.clone().unwrap_or_default(), &e);
    status.last_error = Some(e);
    let r = reason.as_str();
    conditions_of(&mut status, obj, now)
        .rented(false, r, &msg)
        .ready(false, r, &msg)
        .synced(false, r, &msg);
    Transition {
        status,
        note,
        requeue: Requeue::Retry(reason),
    }
}

/// The object cannot progress until a person acts: phase Failed, every condition False.
pub(super) fn stopped_for(
    obj: &RentedHost,
    mut status: RentedHostStatus,
    e: LastError,
    now: Timestamp,
) -> Transition {
    status.phase = Some(Phase::Failed);
    fail_all(obj, status, e, now)
}

/// The message of a condition and an event: what happened, what the provider said, and
/// what a person can do about it.
pub(super) fn error_message(e: &LastError) -> String {
    let said = e.provider_message.as_deref().unwrap_or_default();
    let mut message = e.message.clone() + &provider_detail(said, e.trace_id.as_deref());
    if let Some(remedy) = e.reason.remedy() {
        message.push_str(". What to do: ");
        message.push_str(remedy);
    }
    message
}

/// A warning note, unless the same error was already reported.
pub(super) fn error_note(before: &RentedHostStatus, error: &LastError) -> Option<Note> {
    let repeated = before
        .last_error
        .as_ref()
        .is_some_and(|b| b.reason == error.reason && b.code == error.code);
    let severity = match error.reason {
        Reason::CredentialsInvalid | Reason::CredentialsMissing => Severity::Alarm,
        _ => Severity::Warning,
    };
    (!repeated).then(|| Note::new(severity, error.reason, error_message(error)))
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
    conditions_of(&mut status, obj, now).synced(false, r, &msg);
    if status.host_id.is_none() {
        conditions_of(&mut status, obj, now).ready(false, r, &msg);
        conditions_of(&mut status, obj, now).rented(false, r, &msg);
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
    conditions_of(&mut t.status, obj, now).synced(false, r, &problem);
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
    conditions_of(&mut status, obj, now).synced(false, r, problem);
    if status.host_id.is_none() {
        conditions_of(&mut status, obj, now).ready(false, r, problem);
        conditions_of(&mut status, obj, now).rented(false, r, problem);
        status.phase = Some(Phase::Pending);
    }
    Transition {
        status,
        note,
        requeue: Requeue::Retry(Reason::CredentialsMissing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decision::testing::*;

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
        assert_eq!(t.note.unwrap().reason.as_str(), "CredentialsAccountChanged");
    }

    #[test]
    fn missing_credentials_and_failed_observations_keep_what_is_known() {
        let o = with_host("h1", Some(Phase::Running));
        let t = credentials_missing(&o, "credentials Secret ns/x not found", t0());
        assert_eq!(t.status.host_id.as_deref(), Some("h1"));
        assert_eq!(t.status.phase, Some(Phase::Running));
        assert_eq!(
            cond(&t.status, ConditionType::Synced).1,
            "CredentialsMissing"
        );
        assert_eq!(t.requeue, Requeue::Retry(Reason::CredentialsMissing));
        let note = t.note.unwrap();
        assert_eq!(note.severity, Severity::Alarm, "a person must act: ERROR");
        let t = provider_failed(&o, &ProviderError::Transport("timed out".into()), t0());
        assert_eq!(t.note.unwrap().severity, Severity::Warning);
        assert_eq!(t.status.host_id.as_deref(), Some("h1"));
        assert_eq!(
            cond(&t.status, ConditionType::Synced).1,
            "ProviderUnavailable"
        );
        assert_eq!(t.requeue, Requeue::Retry(Reason::ProviderUnavailable));
    }
}
