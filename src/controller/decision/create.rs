//! Creating: what is recorded before createRent, what each answer leads to, and how a
//! pending create whose answer was lost is settled.

use super::status::*;
use super::*;

/// The status recorded (and confirmed by the API server) before createRent is called, for
/// the create begun at `since` (its budgets' reservations name it). `deadline` bounds the
/// recording and the call together.
pub fn creating(obj: &RentedHost, since: Timestamp, deadline: Timestamp) -> RentedHostStatus {
    let mut status = base(obj);
    let package = next_package(obj).unwrap_or_else(|| obj.spec.package_id.clone());
    status.package_id = Some(package.clone());
    status.create_pending = Some(CreatePending {
        since: since.to_string(),
        request: Some(CreateRequest::asking(&obj.spec, &package)),
        call_ended: None,
        deadline: Some(deadline.to_string()),
        asked_at: None,
    });
    status.create_attempts = Some(status.create_attempts.unwrap_or(0) + 1);
    if let Some(value) = retry_requested(obj) {
        status.last_retry_request = Some(value);
    }
    status.phase = Some(Phase::Creating);
    let msg = "calling createRent";
    conditions_of(&mut status, obj, since)
        .rented(false, Reason::Creating.as_str(), msg)
        .ready(false, Reason::Creating.as_str(), msg)
        .synced(true, Reason::Creating.as_str(), msg);
    status
}

/// A create not sent for a budget of the namespace: it has no room for the host
/// (`BudgetExceeded`), or the host's price is not known (`PriceUnknown`).
pub fn not_sent(obj: &RentedHost, reason: Reason, why: &str, now: Timestamp) -> Transition {
    let mut status = base(obj);
    status.phase = Some(Phase::Pending);
    let e = local_error(reason, format!("no createRent sent: {why}"));
    fail_all(obj, status, e, now)
}

/// `obj`'s status once host `id` is known to be its own (`how` says how it became so).
pub(super) fn rented(obj: &RentedHost, id: &str, how: &str, now: Timestamp) -> RentedHostStatus {
    let mut status = base(obj);
    status.host_id = Some(id.to_string());
    // The host is of the package its create asked for, and spends that create's budget.
    if let Some(pending) = &status.create_pending {
        status.rented_since = Some(pending.since.clone());
        status.package_id = Some(packages::asked(obj));
    }
    status.create_pending = None;
    status.last_error = None;
    status.phase = Some(Phase::Provisioning);
    let msg = format!("host {id} {how}");
    conditions_of(&mut status, obj, now)
        .rented(true, Reason::Rented.as_str(), &msg)
        .ready(
            false,
            Reason::Provisioning.as_str(),
            "waiting for the host to run",
        )
        .synced(true, Reason::Rented.as_str(), &msg);
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
            let note = Note::new(
                Severity::Info,
                Act::Created,
                format!(
                    "rented host {id} (package {}, image {}, {} x {})",
                    packages::asked(&view),
                    s.image_id,
                    s.period.count,
                    s.period.unit
                ),
            );
            Transition {
                status: rented(&view, id, "rented", now),
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
            conditions_of(&mut status, &view, now)
                .rented(false, Reason::AwaitingCreateOutcome.as_str(), &msg)
                .ready(false, Reason::AwaitingCreateOutcome.as_str(), &msg)
                .synced(false, Reason::AwaitingCreateOutcome.as_str(), &msg);
            Transition {
                status,
                note,
                requeue: Requeue::Retry(Reason::AwaitingCreateOutcome),
            }
        }
    }
}

/// A proven refusal of createRent: no host exists; the retry table applies.
pub(super) fn refused(view: &RentedHost, error: &ProviderError, now: Timestamp) -> Transition {
    let reason = Reason::of(error);
    let mut status = view.status.clone().unwrap_or_default();
    let asked = packages::asked(view);
    status.create_pending = None;
    let after = packages::after_refusal(view, &mut status, &asked, reason);
    let mut e = last_error(reason, error);
    let fallbacks = !view.spec.fallback_package_ids.is_empty();
    if fallbacks {
        e.message = format!("package {asked}: {}", e.message);
    }
    let phase = match &after {
        packages::After::None => Phase::Failed,
        packages::After::Same if reason.is_terminal() => Phase::Failed,
        _ => Phase::Pending,
    };
    status.phase = Some(phase);
    let next = match &after {
        packages::After::Next(next) => next,
        packages::After::Round(first) => {
            e.message = format!(
                "{}; every package was asked for: the next create asks for {first} again, after a backoff",
                e.message
            );
            // 7005 on the last package: the others wait as after a 6002 on it.
            let mut t = fail_all(view, status, e, now);
            t.requeue = Requeue::Retry(Reason::InsufficientResources);
            return t;
        }
        packages::After::Same | packages::After::None => {
            return fail_all(view, status, e, now);
        }
    };
    // Another package may be free (or of the image's type): ask for it at once.
    e.message = format!(
        "{}; asking for package {next} next (spec.fallbackPackageIds)",
        e.message
    );
    let mut t = fail_all(view, status, e, now);
    let e = t.status.last_error.as_ref().expect("fail_all records it");
    t.note = Some(Note::new(Severity::Warning, reason, error_message(e)));
    t.requeue = Requeue::After(Duration::ZERO);
    t
}

/// How long the host of an unanswered createRent may take to show in the account's
/// listing, counted from the end of the call (or of its budget).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grace {
    pub from: Timestamp,
    pub length: Duration,
    /// When the listing that lacks the host began: the grace is over for it only if it
    /// was over by then (a host may show in listings that begin later).
    pub listed: Timestamp,
}

impl Grace {
    /// What is left of the grace period at `now`; `None` once it is over.
    fn left(&self, now: Timestamp) -> Option<Duration> {
        let waited = Duration::try_from(now.duration_since(self.from)).unwrap_or(Duration::ZERO);
        self.length
            .checked_sub(waited)
            .filter(|left| !left.is_zero())
    }
}

/// The step after looking for the host of an unanswered createRent.
pub fn after_resolution(
    obj: &RentedHost,
    found: &Resolution,
    grace: Grace,
    now: Timestamp,
) -> Transition {
    let mut status = base(obj);
    // Nothing was rented (by the user's word, or after the grace period): create again.
    let create_again = |mut status: RentedHostStatus, act: Act, message: String| {
        status.create_pending = None;
        let note = Note::new(Severity::Money, act, message);
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
        return create_again(status, Act::CreateNotRented, message);
    }
    match found {
        Resolution::Adopt(id) => {
            let note = Note::new(
                Severity::Money,
                Act::AdoptedHost,
                format!("adopted host {id}, created by an unanswered createRent"),
            );
            let status = rented(obj, id, "adopted after an unanswered createRent", now);
            Transition {
                status,
                note: Some(note),
                requeue: Requeue::Observe { transitional: true },
            }
        }
        Resolution::NoHost => {
            if grace.left(now.min(grace.listed)).is_none() {
                let message = format!(
                    "no new host appeared within {}s of the unanswered createRent: creating again",
                    grace.length.as_secs()
                );
                return create_again(status, Act::CreateNotCommitted, message);
            }
            // Over by now though not when the listing began: a listing begun later decides.
            let left = grace.left(now).unwrap_or_default();
            let msg = "waiting for the provider to show the host of an unanswered createRent";
            let r = Reason::AwaitingCreateOutcome.as_str();
            status.phase = Some(Phase::Creating);
            conditions_of(&mut status, obj, now)
                .rented(false, r, msg)
                .ready(false, r, msg)
                .synced(true, r, msg);
            Transition {
                status,
                note: None,
                requeue: Requeue::After(left),
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
            let e = local_error(Reason::CreateOutcomeUnknown, msg);
            stopped_for(obj, status, e, now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decision::testing::*;
    use crate::provider::explain;

    #[test]
    fn creating_records_pending_before_the_call() {
        let s = creating(&obj(None), t0(), later(30));
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
        let again = creating(&obj(Some(s)), later(10), later(40));
        assert_eq!(again.create_attempts, Some(2));
        assert!(again.create_pending.as_ref().unwrap().asked_at.is_none());
        assert_eq!(
            again.create_pending.unwrap().deadline.as_deref(),
            Some("2026-11-26T07:00:40Z")
        );
    }

    #[test]
    fn a_create_not_sent_for_a_budget_keeps_its_package_until_the_spec_changes() {
        let mut o = obj(None);
        o.spec.fallback_package_ids = vec!["B".into()];
        o.status = Some(RentedHostStatus {
            package_id: Some("B".into()),
            observed_generation: Some(1),
            ..Default::default()
        });
        assert_eq!(next_package(&o).as_deref(), Some("B"));
        let t = not_sent(&o, Reason::BudgetExceeded, "this host costs 1.00 CNY", t0());
        assert_eq!(
            cond(&t.status, ConditionType::Ready),
            ("False".into(), "BudgetExceeded".into())
        );
        assert!(
            t.status
                .last_error
                .as_ref()
                .unwrap()
                .message
                .contains("no createRent sent: this host costs 1.00 CNY")
        );
        assert_eq!(t.requeue, Requeue::Retry(Reason::BudgetExceeded));
        let mut refused = o.clone();
        refused.status = Some(t.status);
        assert_eq!(
            next_package(&refused).as_deref(),
            Some("B"),
            "the package refused for the budget: the first answered 6002"
        );
        // A changed spec starts from its first package.
        o.status.as_mut().unwrap().package_id = Some("B".into());
        o.metadata.generation = Some(2);
        assert_eq!(next_package(&o).as_deref(), Some("teTapaSUFq"));
    }

    #[test]
    fn a_host_id_answer_rents() {
        let o = obj(None);
        let t = after_create(&o, &pending(&o), &Ok("dyMFQQgHIW".into()), t0());
        assert_eq!(t.status.host_id.as_deref(), Some("dyMFQQgHIW"));
        assert_eq!(
            t.status.rented_since.as_deref(),
            Some("2026-11-26T07:00:00Z"),
            "the create that rented it, whose reservation it spends"
        );
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
        assert_eq!(t.note.unwrap().reason.as_str(), "Created");
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
            assert!(note.is_warning());
            assert_eq!(note.reason.as_str(), reason.as_str());
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
        assert_eq!(other.note.unwrap().reason.as_str(), "InsufficientBalance");
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
                t.status.last_error.as_ref().unwrap().reason.as_str(),
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

    #[test]
    fn resolution_adopts_one_waits_for_none_and_stops_on_many() {
        let o = obj(Some(pending(&obj(None))));
        let grace = Grace {
            from: t0(),
            length: Duration::from_secs(120),
            listed: later(121),
        };
        let one = after_resolution(&o, &Resolution::Adopt("h1".into()), grace, later(10));
        assert_eq!(one.status.host_id.as_deref(), Some("h1"));
        assert_eq!(
            one.status.rented_since.as_deref(),
            Some("2026-11-26T07:00:00Z")
        );
        assert!(one.status.create_pending.is_none());
        let adopted = one.note.unwrap();
        assert_eq!(adopted.reason.as_str(), "AdoptedHost");
        assert_eq!(adopted.severity, Severity::Money, "money at stake: WARN");

        let early = after_resolution(&o, &Resolution::NoHost, grace, later(30));
        assert!(
            early.status.create_pending.is_some(),
            "within the grace period the create may still show up"
        );
        assert_eq!(early.requeue, Requeue::After(Duration::from_secs(90)));
        assert_eq!(
            cond(&early.status, ConditionType::Ready).1,
            "AwaitingCreateOutcome"
        );

        let late = after_resolution(&o, &Resolution::NoHost, grace, later(121));
        assert!(late.status.create_pending.is_none());
        assert!(late.status.host_id.is_none());
        let not_committed = late.note.unwrap();
        assert_eq!(not_committed.reason.as_str(), "CreateNotCommitted");
        assert_eq!(
            not_committed.severity,
            Severity::Money,
            "money at stake: WARN"
        );
        assert_eq!(plan(&obj(Some(late.status))), Step::Create);

        // A listing begun before the grace ended proves nothing, however late it is read.
        let listed_early = Grace {
            listed: later(100),
            ..grace
        };
        let stale = after_resolution(&o, &Resolution::NoHost, listed_early, later(200));
        assert!(stale.status.create_pending.is_some());
        assert_eq!(stale.requeue, Requeue::After(Duration::ZERO));

        let many = after_resolution(
            &o,
            &Resolution::Ambiguous(vec!["h1".into(), "h2".into()]),
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
        let grace = Grace {
            from: t0(),
            length: Duration::from_secs(120),
            listed: later(2),
        };
        let asked = obj(Some(
            after_resolution(&waiting, &ambiguous, grace, later(1)).status,
        ));
        for (mut o, value, allowed) in [
            (waiting.clone(), since.as_str(), false),
            (asked.clone(), "true", false),
            (asked.clone(), "2026-11-25T07:00:00Z", false),
            (asked.clone(), since.as_str(), true),
        ] {
            annotate(&mut o, value);
            assert_eq!(create_not_rented_allowed(&o), allowed, "{value}");
            let t = after_resolution(&o, &ambiguous, grace, later(2));
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
}
