//! What holds an object's next createRent back: the retry count per reason (the backoff's
//! attempt number), and a backoff that holds even when another trigger reconciles the
//! object first. (A pool's hold on siblings is the pool's: `pool::throttle`.)

use super::reason::Reason;
use crate::api::RentedHost;
use kube::ResourceExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn uid(obj: &RentedHost) -> String {
    obj.uid().unwrap_or_default()
}

#[derive(Default)]
pub struct Holds {
    /// Retries so far per object (uid) and reason, until a success resets them: a reason
    /// met after others starts at the first step of its own row (a 6005 after transport
    /// errors waits 15 s, not the transport row's fourth step).
    attempts: Mutex<HashMap<(String, Reason), u32>>,
    /// No createRent before this instant for this (uid, generation).
    creates: Mutex<HashMap<String, (Option<i64>, Instant)>>,
}

impl Holds {
    /// The next retry attempt number for an object and reason (0 first), counting it.
    pub fn next_attempt(&self, obj: &RentedHost, reason: Reason) -> u32 {
        let mut attempts = self.attempts.lock();
        let n = attempts.entry((uid(obj), reason)).or_insert(0);
        let current = *n;
        *n = n.saturating_add(1);
        current
    }

    /// The object's retries start over, and its creates are no longer held.
    pub fn reset(&self, obj: &RentedHost) {
        let uid = uid(obj);
        self.attempts.lock().retain(|(u, _), _| *u != uid);
        self.creates.lock().remove(&uid);
    }

    /// Holds creates for this object's generation until `until`.
    pub fn hold_creates(&self, obj: &RentedHost, until: Instant) {
        let mut creates = self.creates.lock();
        creates.insert(uid(obj), (obj.metadata.generation, until));
    }

    /// How long creates are still held for this object at its generation.
    pub fn create_held_for(&self, obj: &RentedHost) -> Option<Duration> {
        let creates = self.creates.lock();
        let (generation, until) = creates.get(&uid(obj))?;
        let left = until.checked_duration_since(Instant::now())?;
        (*generation == obj.metadata.generation).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_per_reason_and_reset_per_object() {
        let holds = Holds::default();
        let obj = |uid: &str| {
            let mut o = crate::controller::decision::testing::obj(None);
            o.metadata.uid = Some(uid.into());
            o
        };
        let (me, other) = (obj("uid"), obj("other"));
        for n in 0..4 {
            assert_eq!(holds.next_attempt(&me, Reason::ProviderUnavailable), n);
        }
        let first = holds.next_attempt(&me, Reason::ProviderCreating);
        assert_eq!(first, 0);
        assert_eq!(
            Reason::ProviderCreating.retry().delay(first, 0.5),
            Some(Duration::from_secs(15)),
            "a 6005 after transport errors starts at 15 s"
        );
        assert_eq!(holds.next_attempt(&other, Reason::ProviderUnavailable), 0);
        holds.reset(&me);
        assert_eq!(holds.next_attempt(&me, Reason::ProviderUnavailable), 0);
    }
}
