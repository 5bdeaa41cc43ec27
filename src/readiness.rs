//! What `/readyz` and the `rentedhost_leader` gauge say about this process.
//!
//! Ready means the process can do its job: a standby can, because its job is to take over
//! (a rollout or a drain counts on it being Ready: a standby that never is would hold every
//! `helm upgrade --wait` and every drain forever); a leader can once its object caches hold
//! their first full list. No replica is ready while the served CRDs lack what it writes.
//! Who leads is the gauge and a log line, not a readiness state.

use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::BTreeSet;
use strum::{EnumIter, IntoEnumIterator, IntoStaticStr};

/// The object caches a leader needs before it answers for its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, EnumIter, IntoStaticStr)]
pub enum Cache {
    RentedHosts,
    RentedHostPools,
    /// The pool controller's view of every RentedHost's owners.
    PoolChildren,
    /// The budgets every create reserves in.
    RentedHostBudgets,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Before the first check of the served CRDs.
    Starting,
    /// Waiting for the Lease another replica holds.
    Standby,
    Leading,
    /// Leadership ended; the process is on its way out.
    Stopping,
}

#[derive(Debug)]
struct State {
    role: Role,
    synced: BTreeSet<Cache>,
    /// Why no replica of this binary can do its job here (the served CRDs, say).
    blocked: Option<String>,
}

#[derive(Debug)]
pub struct Readiness {
    state: Mutex<State>,
    /// 1 while this replica leads, 0 otherwise (`rentedhost_leader`).
    pub leader: Gauge,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            state: Mutex::new(State {
                role: Role::Starting,
                synced: BTreeSet::new(),
                blocked: None,
            }),
            leader: Gauge::default(),
        }
    }
}

impl Readiness {
    /// Says (or stops saying) why the process cannot do its job at all.
    pub fn block(&self, why: Option<String>) {
        self.state.lock().blocked = why;
    }

    /// Waiting for the Lease: ready unless blocked.
    pub fn standing_by(&self) {
        self.set_role(Role::Standby);
    }

    /// Reconciling: ready once every cache synced (caches start with the leadership).
    pub fn leading(&self) {
        let mut state = self.state.lock();
        state.role = Role::Leading;
        state.synced.clear();
        self.leader.set(1);
    }

    /// Leadership ended; the process is about to exit.
    pub fn stopped_leading(&self) {
        self.set_role(Role::Stopping);
    }

    fn set_role(&self, role: Role) {
        self.state.lock().role = role;
        self.leader.set(i64::from(role == Role::Leading));
    }

    /// `cache` holds its first full list.
    pub fn synced(&self, cache: Cache) {
        self.state.lock().synced.insert(cache);
    }

    /// What `/readyz` answers: `Ok` with what this replica is doing, or why it is not ready.
    pub fn check(&self) -> Result<String, String> {
        let state = self.state.lock();
        if let Some(why) = &state.blocked {
            return Err(why.clone());
        }
        match state.role {
            Role::Starting => Err("starting: checking the installed CRDs".into()),
            Role::Stopping => Err("stopping: no longer leading".into()),
            Role::Standby => Ok("ok: standing by (another replica leads)".into()),
            Role::Leading => {
                let waiting: Vec<&'static str> = Cache::iter()
                    .filter(|c| !state.synced.contains(c))
                    .map(Into::into)
                    .collect();
                match waiting.is_empty() {
                    true => Ok("ok: leading".into()),
                    false => Err(format!(
                        "leading; object caches not synced yet: {}",
                        waiting.join(", ")
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_starting_process_is_not_ready() {
        let r = Readiness::default();
        assert!(r.check().unwrap_err().starts_with("starting"));
        assert_eq!(r.leader.get(), 0);
    }

    #[test]
    fn a_standby_is_ready_and_does_not_lead() {
        let r = Readiness::default();
        r.standing_by();
        assert_eq!(
            r.check().unwrap(),
            "ok: standing by (another replica leads)"
        );
        assert_eq!(r.leader.get(), 0);
    }

    #[test]
    fn a_leader_is_ready_once_every_cache_synced() {
        let r = Readiness::default();
        r.standing_by();
        r.leading();
        assert_eq!(r.leader.get(), 1);
        r.synced(Cache::RentedHosts);
        r.synced(Cache::PoolChildren);
        r.synced(Cache::RentedHostBudgets);
        let why = r.check().unwrap_err();
        assert_eq!(
            why,
            "leading; object caches not synced yet: RentedHostPools"
        );
        r.synced(Cache::RentedHostPools);
        assert_eq!(r.check().unwrap(), "ok: leading");
        r.stopped_leading();
        assert_eq!(r.leader.get(), 0);
        assert_eq!(r.check().unwrap_err(), "stopping: no longer leading");
    }

    #[test]
    fn caches_synced_before_leading_do_not_count() {
        let r = Readiness::default();
        for cache in Cache::iter() {
            r.synced(cache);
        }
        r.leading();
        assert!(r.check().is_err());
    }

    #[test]
    fn blocked_is_not_ready_whatever_the_role() {
        let r = Readiness::default();
        r.block(Some("the CRD lacks status.x".into()));
        r.standing_by();
        assert_eq!(r.check().unwrap_err(), "the CRD lacks status.x");
        r.leading();
        for cache in Cache::iter() {
            r.synced(cache);
        }
        assert_eq!(r.check().unwrap_err(), "the CRD lacks status.x");
        r.block(None);
        assert!(r.check().is_ok());
    }
}
