//! The releases this process makes on an account. While one is under way, a listing's
//! pages shift under it (a host may be skipped), so that listing proves no absence; and a
//! host released since a listing was read still shows in it, though its object may be gone.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a release is remembered: a listing that began longer ago than this cannot
/// tell which of its hosts were released since.
pub const MEMORY: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub(super) struct Releases {
    began: AtomicU64,
    ended: AtomicU64,
    /// Hosts released (or being released) lately: when the release ended, if it has.
    recent: Mutex<HashMap<String, Option<Instant>>>,
}

/// The releases begun and ended when a listing's fetch started.
#[derive(Clone, Copy)]
pub(super) struct Mark {
    began: u64,
    ended: u64,
}

impl Releases {
    pub(super) fn begin(&self, id: &str) {
        let mut recent = self.recent.lock();
        let now = Instant::now();
        recent.retain(|_, ended| ended.is_none_or(|at| now.duration_since(at) < MEMORY));
        recent.insert(id.to_string(), None);
        self.began.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn end(&self, id: &str) {
        self.recent
            .lock()
            .insert(id.to_string(), Some(Instant::now()));
        self.ended.fetch_add(1, Ordering::SeqCst);
    }

    /// Taken before a listing's first page is asked for.
    pub(super) fn mark(&self) -> Mark {
        // Ended first: a release beginning between the two reads counts as under way.
        let ended = self.ended.load(Ordering::SeqCst);
        let began = self.began.load(Ordering::SeqCst);
        Mark { began, ended }
    }

    /// Whether no release was under way at any moment between `mark` and now.
    pub(super) fn none_since(&self, mark: Mark) -> bool {
        mark.began == mark.ended && self.began.load(Ordering::SeqCst) == mark.began
    }

    /// Every host remembered as released or being released.
    pub(super) fn all(&self) -> HashSet<String> {
        self.recent.lock().keys().cloned().collect()
    }

    /// The hosts whose release was under way or ended after `since`; `None` when `since`
    /// is longer ago than releases are remembered.
    pub(super) fn since(&self, since: Instant) -> Option<HashSet<String>> {
        if since.elapsed() >= MEMORY {
            return None;
        }
        let recent = self.recent.lock();
        let after = |ended: &Option<Instant>| ended.is_none_or(|at| at > since);
        let ids = recent.iter().filter(|(_, ended)| after(ended));
        Some(ids.map(|(id, _)| id.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_quiet_only_when_no_release_overlapped_it() {
        let releases = Releases::default();
        let mark = releases.mark();
        assert!(releases.none_since(mark));
        releases.begin("h1");
        assert!(!releases.none_since(mark), "one began during the listing");
        let during = releases.mark();
        releases.end("h1");
        assert!(
            !releases.none_since(during),
            "one was under way at its start"
        );
        let after = releases.mark();
        assert!(releases.none_since(after));
    }

    #[test]
    fn released_hosts_are_named_for_listings_that_may_still_show_them() {
        let releases = Releases::default();
        let first = Instant::now();
        releases.begin("old");
        releases.end("old");
        std::thread::sleep(Duration::from_millis(2));
        let listed = Instant::now();
        releases.begin("late");
        releases.end("late");
        releases.begin("under-way");
        let ids = releases.since(listed).unwrap();
        assert_eq!(
            ids,
            HashSet::from(["late".to_string(), "under-way".to_string()])
        );
        assert!(releases.since(first).unwrap().contains("old"));
    }
}
