//! Arbitrary objects and provider answers through the reconcile decision: no panic, never a
//! create planned for an object with a pending create or a host, and no answer that drops a
//! known host id.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use rentedhost_operator::api::{CreatePending, RentedHost, RentedHostSpec, RentedHostStatus};
use rentedhost_operator::controller::decision::{self, Step};
use rentedhost_operator::provider::{Host, ProviderError};

fn text(u: &mut Unstructured) -> arbitrary::Result<Option<String>> {
    Ok(match u.int_in_range(0..=3)? {
        0 => None,
        1 => Some(String::new()),
        2 => Some(" ".into()),
        _ => Some(String::arbitrary(u)?),
    })
}

fn object(u: &mut Unstructured) -> arbitrary::Result<RentedHost> {
    let spec: RentedHostSpec = serde_json::from_value(serde_json::json!({
        "packageId": "teTapaSUFq", "imageId": "507", "period": {"count": 5, "unit": "Month"}
    }))
    .expect("a valid spec");
    let mut o = RentedHost::new("rh", spec);
    o.metadata.namespace = Some("ns".into());
    o.metadata.generation = Some(u.int_in_range(1..=3)?);
    if bool::arbitrary(u)? {
        o.metadata.finalizers = Some(vec![rentedhost_operator::api::FINALIZER.into()]);
    }
    o.spec.host_id = text(u)?;
    let create_pending = if bool::arbitrary(u)? {
        Some(CreatePending {
            since: String::arbitrary(u)?,
            request: None,
            call_ended: text(u)?,
            deadline: text(u)?,
            asked_at: text(u)?,
        })
    } else {
        None
    };
    o.status = Some(RentedHostStatus {
        host_id: text(u)?,
        create_pending,
        observed_generation: Some(u.int_in_range(1..=3)?),
        ..Default::default()
    });
    Ok(o)
}

fn answer(u: &mut Unstructured) -> arbitrary::Result<Result<bool, ProviderError>> {
    Ok(match u.int_in_range(0..=3)? {
        0 => Ok(bool::arbitrary(u)?),
        1 => Err(ProviderError::Business {
            code: i64::arbitrary(u)?,
            message: String::arbitrary(u)?,
            trace_id: text(u)?,
        }),
        2 => Err(ProviderError::HttpStatus(u16::arbitrary(u)?)),
        _ => Err(ProviderError::Transport(String::arbitrary(u)?)),
    })
}

fn run(u: &mut Unstructured) -> arbitrary::Result<()> {
    let o = object(u)?;
    let status = o.status.clone().unwrap_or_default();
    let step = decision::plan(&o);
    let has_host = status
        .host_id
        .as_deref()
        .is_some_and(|h| !h.trim().is_empty());
    if status.create_pending.is_some() || has_host {
        assert_ne!(step, Step::Create, "{o:?}");
    }
    let now = jiff::Timestamp::from_second(u.int_in_range(1_700_000_000..=1_900_000_000)?)
        .expect("a time in range");
    if let Step::Observe(id) = step {
        let host = bool::arbitrary(u)?.then(|| Host {
            id: Some(id.clone()),
            status: text(u).ok().flatten(),
            expiration_time: Option::<i64>::arbitrary(u).ok().flatten(),
            create_time: Option::<i64>::arbitrary(u).ok().flatten(),
            ..Default::default()
        });
        let observed = decision::after_observe(&o, &id, host.as_ref(), now);
        assert_eq!(observed.status.host_id.as_deref(), Some(id.as_str()));
        let answer = answer(u)?;
        let operated = decision::Operated {
            observed,
            answer: &answer,
        };
        let powered = decision::after_power(&o, operated, bool::arbitrary(u)?, now);
        assert_eq!(powered.status.host_id.as_deref(), Some(id.as_str()));
    }
    Ok(())
}

fuzz_target!(|bytes: &[u8]| {
    let _ = run(&mut Unstructured::new(bytes));
});
