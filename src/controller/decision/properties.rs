//! Properties of the decision over generated objects and answers: it never plans a create for
//! an object that has a pending create or a host, and no answer makes it forget either.

use super::status::{local_error, time};
use super::testing::*;
use super::*;
use crate::api::{CreatePending, CreateRequest, LastError, RentedHostStatus};
use proptest::prelude::*;

fn id() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        Just(Some("  ".to_string())),
        "[A-Za-z]{10}".prop_map(Some),
    ]
}

fn pending() -> impl Strategy<Value = Option<CreatePending>> {
    let one = (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(ended, asked, request)| {
        CreatePending {
            since: t0().to_string(),
            request: request.then(|| CreateRequest::of(&obj(None).spec)),
            call_ended: ended.then(|| later(1).to_string()),
            deadline: Some(later(30).to_string()),
            asked_at: asked.then(|| later(60).to_string()),
        }
    });
    prop_oneof![Just(None), one.prop_map(Some)]
}

fn reason() -> impl Strategy<Value = Option<LastError>> {
    use strum::IntoEnumIterator;
    let reasons: Vec<Reason> = Reason::iter().collect();
    prop_oneof![
        Just(None),
        proptest::sample::select(reasons).prop_map(|r| Some(local_error(r, "m"))),
    ]
}

prop_compose! {
    fn object()(
        host_id in id(),
        spec_host_id in id(),
        create_pending in pending(),
        last_error in reason(),
        finalizer in any::<bool>(),
        deleting in any::<bool>(),
        generation in 1i64..4,
        observed in proptest::option::of(1i64..4),
        annotated in any::<bool>(),
    ) -> RentedHost {
        let mut o = obj(Some(RentedHostStatus {
            host_id,
            create_pending,
            last_error,
            observed_generation: observed,
            ..Default::default()
        }));
        o.spec.host_id = spec_host_id;
        o.metadata.generation = Some(generation);
        if !finalizer {
            o.metadata.finalizers = None;
        }
        if deleting {
            o.metadata.deletion_timestamp = Some(time(t0()));
        }
        if annotated {
            o.metadata.annotations = Some(
                [(CREATE_NOT_RENTED_ANNOTATION.to_string(), t0().to_string())].into(),
            );
        }
        o
    }
}

fn answer() -> impl Strategy<Value = Result<bool, ProviderError>> {
    prop_oneof![
        any::<bool>().prop_map(Ok),
        (0i64..10_000).prop_map(|code| Err(business(code))),
        Just(Err(ProviderError::Transport("reset".into()))),
        Just(Err(ProviderError::HttpStatus(502))),
        Just(Err(ProviderError::Malformed("x".into()))),
    ]
}

fn host_of(found: bool, status: u8) -> Option<Host> {
    found.then(|| Host {
        status: Some(status.to_string()),
        ..host("h", t0(), 8)
    })
}

proptest! {
    // A few thousand objects each: the interesting ones (a host, a pending create) are a
    // fraction of them.
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn no_create_is_planned_for_an_object_with_a_pending_create_or_a_host(o in object()) {
        let status = o.status.clone().unwrap_or_default();
        let has_host = status.host_id.as_deref().is_some_and(|h| !h.trim().is_empty());
        if status.create_pending.is_some() || has_host {
            prop_assert_ne!(plan(&o), Step::Create);
        }
    }

    /// Whatever the provider answers while a host is known, the host id and a pending create
    /// stay in the status the decision writes.
    #[test]
    fn no_answer_drops_a_host_or_a_pending_create(
        o in object(),
        found in any::<bool>(),
        host_status in 0u8..8,
        answer in answer(),
        start in any::<bool>(),
    ) {
        let before = o.status.clone().unwrap_or_default();
        let Step::Observe(id) = plan(&o) else { return Ok(()) };
        let host = host_of(found, host_status);
        let observed = after_observe(&o, &id, host.as_ref(), t0());
        prop_assert_eq!(observed.status.host_id.as_deref(), Some(id.as_str()));
        let error = answer.clone().err().unwrap_or(ProviderError::Transport("t".into()));
        let failed = provider_failed(&o, &error, t0());
        prop_assert_eq!(&failed.status.host_id, &before.host_id);
        prop_assert_eq!(&failed.status.create_pending, &before.create_pending);
        let operated = Operated { observed, answer: &answer };
        let powered = after_power(&o, operated, start, t0());
        prop_assert_eq!(powered.status.host_id.as_deref(), Some(id.as_str()));
    }

    /// Resolving a pending create keeps it until a host is the object's, the grace period
    /// has passed without any, or the person named it.
    #[test]
    fn a_pending_create_ends_only_with_a_host_or_proof(
        o in object(),
        found in prop_oneof![
            Just(Resolution::NoHost),
            "[a-z]{4}".prop_map(Resolution::Adopt),
            proptest::collection::vec("[a-z]{4}", 1..4).prop_map(Resolution::Ambiguous),
        ],
        waited in 0i64..300,
        listed in 0i64..300,
    ) {
        if plan(&o) != Step::ResolvePending {
            return Ok(());
        }
        let grace = Grace { from: t0(), length: Duration::from_secs(120), listed: later(listed) };
        let t = after_resolution(&o, &found, grace, later(waited));
        if t.status.create_pending.is_none() {
            let adopted = t.status.host_id.is_some();
            let grace_over = found == Resolution::NoHost && waited.min(listed) >= 120;
            prop_assert!(adopted || grace_over || create_not_rented_allowed(&o), "{t:?}");
        }
    }
}
