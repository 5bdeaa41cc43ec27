//! Observation: the object's state from its host as the provider shows it, adoption of
//! `spec.hostId`, and the connection Secret.

use super::status::*;
use super::*;

pub(super) fn observed(host: &Host) -> ObservedHost {
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
        conditions_of(&mut status, obj, now)
            .rented(true, Reason::Rented.as_str(), &format!("host {id}"))
            .ready(false, r, &msg)
            .synced(true, Reason::Observed.as_str(), "host observed");
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
    // An observe-only object asks no power state of its host: at rest either way is Ready.
    let ready = match obj.spec.observe_only() {
        true => matches!(phase, Phase::Running | Phase::Stopped),
        false => matches!(
            (want, phase),
            (PowerState::Running, Phase::Running) | (PowerState::Stopped, Phase::Stopped)
        ),
    } && host_status != Some(HostStatus::Stopping);
    let msg = match host_status {
        Some(s) => format!("host {id} is {}", s.name().to_lowercase()),
        None => format!("host {id} reports an unknown status"),
    };
    status.phase = Some(phase);
    conditions_of(&mut status, obj, now)
        .rented(true, Reason::Rented.as_str(), &format!("host {id}"))
        .ready(ready, reason.as_str(), &msg)
        .synced(true, Reason::Observed.as_str(), "host observed");
    let severity = match phase {
        Phase::Expired => Severity::Warning,
        _ => Severity::Info,
    };
    let note = (before.phase != Some(phase) && before.phase.is_some())
        .then(|| Note::new(severity, reason, msg.clone()));
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

/// What looking for `spec.hostId` found.
#[derive(Clone, Copy, Debug)]
pub enum Adoptable<'a> {
    /// Another object (`namespace/name`) claims the host.
    ClaimedBy(&'a str),
    /// The provider account has no such host.
    NotInAccount,
    /// The account's host, claimed by no other object.
    Yes(&'a Host),
}

/// Adoption of `spec.hostId`: the host must be in the account and claimed by no other object.
pub fn after_adopt(obj: &RentedHost, id: &str, found: Adoptable<'_>, now: Timestamp) -> Transition {
    match found {
        Adoptable::ClaimedBy(other) => {
            let msg = format!(
                "host {id} is already claimed by RentedHost {other}; one host belongs to one object"
            );
            stopped_for(obj, base(obj), local_error(Reason::HostClaimed, msg), now)
        }
        Adoptable::NotInAccount => {
            let msg = format!("spec.hostId {id} is not a host of the provider account");
            stopped_for(obj, base(obj), local_error(Reason::HostNotFound, msg), now)
        }
        Adoptable::Yes(host) => {
            let mut view = obj.clone();
            let mut status = base(obj);
            status.host_id = Some(id.to_string());
            // A pending create's host by the user's word: that create spends its budgets.
            status.rented_since = status.create_pending.take().map(|p| p.since);
            // Not known to be of the package a create asked for.
            status.package_id = None;
            status.phase = Some(Phase::Provisioning);
            view.status = Some(status);
            let mut t = after_observe(&view, id, Some(host), now);
            t.note = Some(Note::new(
                Severity::Money,
                Act::AdoptedHost,
                format!("adopted existing host {id} from spec.hostId"),
            ));
            t
        }
    }
}

/// Whether the provider's view of the host differs from what the object shows: the poll
/// triggers a reconcile only then.
/// Whether this write makes the object Ready for the first time: Ready after the phases of
/// renting (a power cycle or a restart later is no first time).
pub fn first_ready(before: Option<&RentedHostStatus>, after: &RentedHostStatus) -> bool {
    let ready = after
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let renting = matches!(
        before.and_then(|b| b.phase),
        None | Some(Phase::Pending | Phase::Creating | Phase::Provisioning)
    );
    ready && renting
}

pub fn host_changed(obj: &RentedHost, host: Option<&Host>) -> bool {
    let status = obj.status.as_ref();
    match host {
        Some(host) => status.and_then(|s| s.host.as_ref()) != Some(&observed(host)),
        None => status
            .and_then(|s| s.last_error.as_ref())
            .is_none_or(|e| e.reason != Reason::HostNotFound),
    }
}

/// Whether the object's host is changing state on the provider's side (starting, stopping),
/// so that the account is polled at the fast interval. A host not seen yet since it was
/// rented is not: its own reconcile looks at it (`one/{id}`, or the listing it asks for),
/// and a poll every fast interval while creates go on would list the account for nothing.
pub fn in_motion(obj: &RentedHost) -> bool {
    let Some(status) = obj.status.as_ref() else {
        return false;
    };
    let Some(host) = status.host.as_ref().filter(|_| status.host_id.is_some()) else {
        return false;
    };
    let ready_reason = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.as_str());
    matches!(host.status.as_deref(), Some("Starting" | "Stopping"))
        || matches!(ready_reason, Some("Starting" | "Stopping" | "Provisioning"))
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
    conditions_of(&mut t.status, obj, now).synced(false, r, &msg);
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
    use crate::controller::decision::testing::*;

    #[test]
    fn an_observe_only_host_at_rest_is_ready_whatever_the_power_state() {
        let mut o = with_host("h1", Some(Phase::Running));
        o.spec.power_state = PowerState::Stopped;
        let h = host("h1", t0(), 4);
        let t = after_observe(&o, "h1", Some(&h), t0());
        assert_eq!(
            cond(&t.status, ConditionType::Ready).0,
            "False",
            "Full wants it stopped"
        );
        o.spec.management_policy = crate::api::ManagementPolicy::ObserveOnly;
        let t = after_observe(&o, "h1", Some(&h), t0());
        assert_eq!(cond(&t.status, ConditionType::Ready).0, "True");
        assert_eq!(power_action(&o, &h), None, "never operated");
    }

    #[test]
    fn only_a_host_changing_state_on_its_own_keeps_the_poll_fast() {
        let rented = with_host("h1", Some(Phase::Provisioning));
        assert!(!in_motion(&rented), "not seen yet: its own reconcile looks");
        let mut seen = rented.clone();
        for (code, moving) in [("0", false), ("1", true), ("2", false), ("4", true)] {
            let mut h = host("h1", t0(), 4);
            h.status = Some(code.into());
            seen.status = Some(after_observe(&rented, "h1", Some(&h), t0()).status);
            assert_eq!(in_motion(&seen), moving, "host status {code}");
        }
        assert!(!in_motion(&obj(None)));
    }

    #[test]
    fn first_ready_is_the_end_of_renting_only() {
        let mut running = with_host("h1", Some(Phase::Running));
        let h = host("h1", t0(), 4);
        let ready = after_observe(&running, "h1", Some(&h), t0()).status;
        assert_eq!(cond(&ready, ConditionType::Ready).0, "True");
        for (phase, first) in [
            (None, true),
            (Some(Phase::Creating), true),
            (Some(Phase::Provisioning), true),
            (Some(Phase::Running), false),
            (Some(Phase::Stopped), false),
            (Some(Phase::Expired), false),
        ] {
            running.status.as_mut().unwrap().phase = phase;
            assert_eq!(
                first_ready(running.status.as_ref(), &ready),
                first,
                "{phase:?}"
            );
        }
        assert!(!first_ready(None, &pending(&obj(None))), "not Ready");
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
            let mut o = with_host("h1", Some(Phase::Provisioning));
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
        let o = with_host("h1", Some(Phase::Running));
        let t = after_observe(&o, "h1", None, t0());
        assert_eq!(
            cond(&t.status, ConditionType::Ready),
            ("False".into(), "HostNotFound".into())
        );
        assert_eq!(t.status.host_id.as_deref(), Some("h1"));
        assert_eq!(plan(&obj(Some(t.status))), Step::Observe("h1".into()));
        assert_eq!(t.note.unwrap().reason.as_str(), "HostNotFound");
    }

    #[test]
    fn adoption_checks_claims_and_existence() {
        let mut o = obj(None);
        o.spec.host_id = Some("h1".into());
        let claimed = after_adopt(&o, "h1", Adoptable::ClaimedBy("ns/other"), t0());
        assert_eq!(cond(&claimed.status, ConditionType::Ready).1, "HostClaimed");
        assert!(claimed.status.host_id.is_none());
        let missing = after_adopt(&o, "h1", Adoptable::NotInAccount, t0());
        assert_eq!(
            cond(&missing.status, ConditionType::Ready).1,
            "HostNotFound"
        );
        let h = host("h1", t0(), 8);
        let adopted = after_adopt(&o, "h1", Adoptable::Yes(&h), t0());
        assert_eq!(adopted.status.host_id.as_deref(), Some("h1"));
        assert_eq!(adopted.note.unwrap().reason.as_str(), "AdoptedHost");
    }
}
