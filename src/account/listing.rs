//! The account's hosts as `mypage` lists them: one listing serves every object of the
//! account, and concurrent requests for a fresh listing share one fetch. Hosts rented after
//! the newest listing began are not in it: each is asked for alone (`one/{id}`), once, and
//! its answer serves every look until a listing that began after its rent shows it.

use super::releases::Releases;
use crate::provider::{Host, ProviderClient, ProviderError};

const PAGE_SIZE: usize = crate::provider::PAGE_SIZE as usize;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// All hosts of one account at one moment.
#[derive(Debug)]
pub struct Listing {
    /// When the fetch started (anything created before this is in it).
    pub started: Instant,
    /// When its last page was read.
    pub finished: Instant,
    /// No release of this process was under way while it was read, so no page shifted
    /// under it by our doing: only such a listing may prove a host absent.
    pub quiet: bool,
    pub hosts: Vec<Host>,
    by_id: HashMap<String, usize>,
}

impl Listing {
    pub fn new(started: Instant, quiet: bool, hosts: Vec<Host>) -> Listing {
        let by_id = hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| Some((h.id.clone()?, i)))
            .collect();
        Listing {
            started,
            finished: Instant::now(),
            quiet,
            hosts,
            by_id,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Host> {
        self.by_id.get(id).map(|i| &self.hosts[*i])
    }
}

/// A host rented (or changed by an operation) after the newest listing began, until a
/// listing that began later shows it.
struct Newer {
    /// When its id was learned (createRent answered it), or it was operated.
    learned: Instant,
    /// Powered or rebooted (not only rented): a listing page read before that is stale.
    operated: bool,
    /// Whether `one/{id}` was asked about it.
    asked: bool,
    /// What `one/{id}` answered.
    host: Option<Host>,
}

/// What is known of a host beside a listing.
#[derive(Debug)]
pub enum Unlisted {
    /// Nothing happened to it since the listing began: the listing is the word on it (and
    /// its absence there means something).
    Older,
    /// Rented or changed after the listing began, and `one/{id}` showed it since.
    Seen(Box<Host>),
    /// Rented or changed after the listing began and not seen since; `asked`: `one/{id}`
    /// was asked.
    Unseen { asked: bool },
}

/// The newest listing of an account, the fetch of the next, and the hosts rented since.
#[derive(Default)]
pub(super) struct Listings {
    /// The newest listing: read without waiting, even while a fetch is under way.
    latest: Mutex<Option<Arc<Listing>>>,
    /// Held while a listing is fetched, so that concurrent requests share one fetch.
    fetching: tokio::sync::Mutex<()>,
    /// Hosts rented after the newest listing began, by id.
    newer: Mutex<HashMap<String, Newer>>,
    /// Pages the listing under way has read so far.
    pages_read: AtomicUsize,
}

impl Listings {
    /// A listing whose fetch started no earlier than `not_before`; with `quiet` (the lock
    /// releases hold shared), one read while no release could shift its pages. `shown` is
    /// told of each host rented since the newest listing as soon as a page shows it.
    pub(super) async fn fresh(
        &self,
        client: &ProviderClient,
        releases: &Releases,
        not_before: Instant,
        quiet: Option<&tokio::sync::RwLock<()>>,
        shown: &(dyn Fn(&str) + Sync),
    ) -> Result<Arc<Listing>, ProviderError> {
        let fresh = || {
            let latest = self.latest.lock();
            let suits = |l: &&Arc<Listing>| l.started >= not_before && (quiet.is_none() || l.quiet);
            latest.as_ref().filter(suits).cloned()
        };
        if let Some(listing) = fresh() {
            return Ok(listing);
        }
        let _fetching = self.fetching.lock().await;
        if let Some(listing) = fresh() {
            return Ok(listing);
        }
        // Releases wait while a listing that must be quiet is read (they never wait for a
        // fetch, so they are taken after it): every one that began before is over.
        let _no_releases = match quiet {
            Some(releasing) => Some(releasing.write().await),
            None => None,
        };
        let asked = Instant::now();
        self.pages_read.store(0, Ordering::Relaxed);
        let first_sent = std::sync::OnceLock::new();
        let mark = releases.mark();
        // A page shows a rented host as well as `one/{id}` would: its look need not wait for
        // the rest of the listing (an operated host does: the page may predate the change).
        let page_shown = |hosts: &[Host]| {
            let mut seen = Vec::new();
            {
                let mut newer = self.newer.lock();
                for host in hosts {
                    let Some(id) = host.id.as_deref() else {
                        continue;
                    };
                    if let Some(n) = newer.get_mut(id)
                        && !n.operated
                        && n.host.is_none()
                    {
                        n.host = Some(host.clone());
                        n.asked = true;
                        seen.push(id);
                    }
                }
            }
            seen.into_iter().for_each(shown);
        };
        let hosts = client
            .all_hosts_counting(&self.pages_read, &first_sent, &page_shown)
            .await?;
        let started = first_sent.get().copied().unwrap_or(asked);
        let quiet = releases.none_since(mark);
        let listing = Arc::new(Listing::new(started, quiet, hosts));
        *self.latest.lock() = Some(listing.clone());
        // What this listing shows (or proves gone) needs no answer of its own any more.
        self.newer.lock().retain(|_, n| n.learned > started);
        Ok(listing)
    }

    pub(super) fn latest(&self) -> Option<Arc<Listing>> {
        self.latest.lock().clone()
    }

    /// Host `id` was rented (`operated`: or changed by an operation) just now (what was
    /// asked or answered of it before is forgotten).
    pub(super) fn changed(&self, id: &str, operated: bool) {
        self.newer.lock().insert(
            id.to_string(),
            Newer {
                learned: Instant::now(),
                operated,
                asked: false,
                host: None,
            },
        );
    }

    /// What is known of host `id` since `listing` (if any) began.
    pub(super) fn unlisted(&self, id: &str, listing: Option<&Listing>) -> Unlisted {
        let newer = self.newer.lock();
        // A rented host that a listing shows was shown as it was after its rent, whenever
        // the listing began (its pages may have waited behind the creates).
        let listed = listing.is_some_and(|l| l.get(id).is_some());
        let after = |n: &&Newer| {
            let before_listing = listing.is_some_and(|l| n.learned <= l.started);
            !before_listing && (n.operated || !listed)
        };
        match newer.get(id).filter(after) {
            None => Unlisted::Older,
            Some(Newer {
                host: Some(host), ..
            }) => Unlisted::Seen(Box::new(host.clone())),
            Some(n) => Unlisted::Unseen { asked: n.asked },
        }
    }

    /// Whether asking for the hosts rented since the newest listing one by one costs fewer
    /// calls than listing the account again.
    pub(super) fn cheaper_alone(&self) -> bool {
        // What a listing costs: the newest one's pages, or what the one under way (the
        // first) has read so far, which a larger account makes larger.
        let listed = self.latest().map_or(0, |l| l.hosts.len() / PAGE_SIZE + 1);
        let pages = listed.max(self.pages_read.load(Ordering::Relaxed)).max(1);
        let unseen = self
            .newer
            .lock()
            .values()
            .filter(|n| n.host.is_none())
            .count();
        unseen < pages
    }

    /// Marks host `id` as asked about: whether it is a host rented after the newest
    /// listing began that nobody asked about yet (then the caller asks).
    pub(super) fn take_ask(&self, id: &str) -> bool {
        let mut newer = self.newer.lock();
        match newer.get_mut(id) {
            Some(n) if !n.asked => {
                n.asked = true;
                true
            }
            _ => false,
        }
    }

    /// What `one/{id}` answered about a host rented after the newest listing began: the
    /// host, or nothing (an error, or a denial just after its rent), which a later look may
    /// ask again.
    pub(super) fn answered(&self, id: &str, host: Option<Host>) {
        if let Some(n) = self.newer.lock().get_mut(id) {
            n.asked = host.is_some();
            n.host = host;
        }
    }

    /// Host `id` is gone from this process's sight (its object is).
    pub(super) fn forget(&self, id: &str) {
        self.newer.lock().remove(id);
    }
}
