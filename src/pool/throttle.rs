//! How a pool's children rent without flooding the provider: at most [`CREATING_AT_ONCE`]
//! renting at once, none added while a child meets a refusal every sibling would meet too,
//! and the siblings of such a child held until it has tried again.

use crate::api::{ConditionType, Reason, RentedHost};
use crate::kit;
use kube::ResourceExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Children a pool lets rent at once (created, no host yet): a pool of many never sends
/// more createRent calls than this into a provider that may refuse them all.
pub const CREATING_AT_ONCE: usize = 5;

fn host_id(child: &RentedHost) -> Option<&str> {
    let id = child.status.as_ref()?.host_id.as_deref()?;
    (!id.trim().is_empty()).then_some(id)
}

/// The reason a child without a host waits, if it is renting (not paused).
fn renting_reason(child: &RentedHost) -> Option<Option<Reason>> {
    if host_id(child).is_some() || crate::api::is_paused(child) {
        return None;
    }
    let status = child.status.as_ref();
    Some(status.and_then(|s| s.reason(ConditionType::Ready)))
}

/// Whether a child stops the pool from adding children: the provider refused its create
/// for a reason every sibling would meet too.
pub fn holding_reason(child: &RentedHost) -> Option<Reason> {
    renting_reason(child)?.filter(|r| r.holds_siblings() || r.waits_for_budget())
}

/// Whether a child takes one of the slots of children renting at once: it is renting and
/// not stopped until a person acts (7005, CreateOutcomeUnknown, …).
pub fn takes_a_slot(child: &RentedHost) -> bool {
    renting_reason(child).is_some_and(|r| !r.is_some_and(Reason::is_terminal))
}

/// The pool (uid) that controls `obj`, if one does.
fn pool_of(obj: &RentedHost) -> Option<String> {
    kit::controller_of(obj, "RentedHostPool").map(str::to_string)
}

/// Creates of a pool's children held after a refusal every sibling would meet: the pool
/// (uid), until when, and the child (uid) that tries again first.
pub struct SiblingHolds {
    /// The longest a create's call may take (a sibling that tries first is waited for).
    call_limit: Duration,
    pools: Mutex<HashMap<String, (Instant, String)>>,
}

impl SiblingHolds {
    pub fn new(call_limit: Duration) -> SiblingHolds {
        SiblingHolds {
            call_limit,
            pools: Mutex::default(),
        }
    }

    /// Holds the creates of `obj`'s pool siblings until `until`; `obj` tries first.
    pub fn hold(&self, obj: &RentedHost, until: Instant) {
        if let Some(pool) = pool_of(obj) {
            let me = obj.uid().unwrap_or_default();
            self.pools.lock().insert(pool, (until, me));
        }
    }

    /// Ends the hold of `obj`'s pool (a create of the pool succeeded).
    pub fn release(&self, obj: &RentedHost) {
        if let Some(pool) = pool_of(obj) {
            self.pools.lock().remove(&pool);
        }
    }

    /// How long `obj` waits for a sibling that tries first: past the hold, plus the time
    /// that sibling's create may take (it extends the hold if refused again, ends it if not).
    pub fn held_for(&self, obj: &RentedHost) -> Option<Duration> {
        let pool = pool_of(obj)?;
        let pools = self.pools.lock();
        let (until, first) = pools.get(&pool)?;
        if *first == obj.uid().unwrap_or_default() {
            return None;
        }
        let end = *until + self.call_limit;
        end.checked_duration_since(Instant::now())
    }
}
