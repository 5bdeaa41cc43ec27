//! The account's hosts as `mypage` lists them: one listing serves every object of the
//! account, and concurrent requests for a fresh listing share one fetch.

use crate::provider::{Host, ProviderClient, ProviderError};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// All hosts of one account at one moment.
#[derive(Debug)]
pub struct Listing {
    /// When the fetch started (anything created before this is in it).
    pub started: Instant,
    pub hosts: Vec<Host>,
    by_id: HashMap<String, usize>,
}

impl Listing {
    pub fn new(started: Instant, hosts: Vec<Host>) -> Listing {
        let by_id = hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| Some((h.id.clone()?, i)))
            .collect();
        Listing {
            started,
            hosts,
            by_id,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Host> {
        self.by_id.get(id).map(|i| &self.hosts[*i])
    }
}

/// The newest listing of an account, and the fetch of the next.
#[derive(Default)]
pub(super) struct Listings {
    /// The newest listing: read without waiting, even while a fetch is under way.
    latest: Mutex<Option<Arc<Listing>>>,
    /// Held while a listing is fetched, so that concurrent requests share one fetch.
    fetching: tokio::sync::Mutex<()>,
}

impl Listings {
    /// A listing whose fetch started no earlier than `not_before`.
    pub(super) async fn fresh(
        &self,
        client: &ProviderClient,
        not_before: Instant,
    ) -> Result<Arc<Listing>, ProviderError> {
        let fresh = || {
            let latest = self.latest.lock();
            latest.as_ref().filter(|l| l.started >= not_before).cloned()
        };
        if let Some(listing) = fresh() {
            return Ok(listing);
        }
        let _fetching = self.fetching.lock().await;
        if let Some(listing) = fresh() {
            return Ok(listing);
        }
        let started = Instant::now();
        let hosts = client.all_hosts().await?;
        let listing = Arc::new(Listing::new(started, hosts));
        *self.latest.lock() = Some(listing.clone());
        Ok(listing)
    }

    pub(super) fn latest(&self) -> Option<Arc<Listing>> {
        self.latest.lock().clone()
    }

    pub(super) fn invalidate(&self) {
        *self.latest.lock() = None;
    }
}
