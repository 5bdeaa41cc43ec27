//! Objects, times and provider answers the decision's unit tests share.

use super::*;
pub(crate) use crate::api::ConditionType;
use crate::api::{RentedHostSpec, RentedHostStatus};

pub(crate) fn obj(status: Option<RentedHostStatus>) -> RentedHost {
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

/// An object whose host is `host_id`, in `phase`.
pub(crate) fn with_host(host_id: &str, phase: Option<Phase>) -> RentedHost {
    obj(Some(RentedHostStatus {
        host_id: Some(host_id.into()),
        phase,
        ..Default::default()
    }))
}

pub(crate) fn t0() -> Timestamp {
    "2026-11-26T07:00:00Z".parse().unwrap()
}

pub(crate) fn later(secs: i64) -> Timestamp {
    t0() + jiff::SignedDuration::from_secs(secs)
}

pub(crate) fn cond(s: &RentedHostStatus, t: ConditionType) -> (String, String) {
    let c = s
        .conditions
        .iter()
        .find(|c| c.type_ == t.as_str())
        .expect("condition set");
    (c.status.clone(), c.reason.clone())
}

pub(crate) fn business(code: i64) -> ProviderError {
    ProviderError::Business {
        code,
        message: format!("msg {code}"),
        trace_id: Some(format!("trace-{code}")),
    }
}

pub(crate) fn pending(o: &RentedHost) -> RentedHostStatus {
    creating(o, t0(), later(30))
}

pub(crate) fn host(id: &str, created: Timestamp, cpu: i64) -> Host {
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
