//! The account's hosts as `mypage` lists them, shared by every object of one account: one
//! listing serves all of them, and concurrent requests for a fresh listing share one fetch.

use super::resolution::Expected;
use crate::api::CreateRequest;
use crate::provider::{Host, Image, Package, ProviderClient, ProviderError};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

#[derive(Default)]
struct AccountHosts {
    /// The newest listing: read without waiting, even while a fetch is under way.
    latest: Mutex<Option<Arc<Listing>>>,
    /// Held while a listing is fetched, so that concurrent requests share one fetch.
    fetching: tokio::sync::Mutex<()>,
    packages: tokio::sync::Mutex<Option<(Instant, Arc<Vec<Package>>)>>,
    images: tokio::sync::Mutex<Option<(Instant, Arc<Vec<Image>>)>>,
    /// Creates hold it shared for as long as their call is in flight; a resolution holds it
    /// exclusively, so that it never sees a host whose create has not answered yet.
    create_gate: Arc<tokio::sync::RwLock<()>>,
}

/// What the catalogue says a request's host looks like (owned; see [`Expected`]).
#[derive(Debug, Clone, Default)]
pub struct Catalogued {
    pub package: Option<Package>,
    pub image: Option<Image>,
}

impl Catalogued {
    pub fn as_ref(&self) -> Expected<'_> {
        Expected {
            package: self.package.as_ref(),
            image: self.image.as_ref(),
        }
    }
}

/// Host listings and package catalogues per account.
#[derive(Default)]
pub struct HostDirectory {
    accounts: Mutex<HashMap<String, Arc<AccountHosts>>>,
}

const PACKAGES_TTL: Duration = Duration::from_secs(600);

impl HostDirectory {
    fn account(&self, client: &ProviderClient) -> Arc<AccountHosts> {
        let mut accounts = self.accounts.lock();
        accounts
            .entry(client.account().to_string())
            .or_default()
            .clone()
    }

    /// A listing whose fetch started no earlier than `not_before`.
    pub async fn listing(
        &self,
        client: &ProviderClient,
        not_before: Instant,
    ) -> Result<Arc<Listing>, ProviderError> {
        let account = self.account(client);
        let fresh = |account: &AccountHosts| {
            let latest = account.latest.lock();
            latest.as_ref().filter(|l| l.started >= not_before).cloned()
        };
        if let Some(listing) = fresh(&account) {
            return Ok(listing);
        }
        let _fetching = account.fetching.lock().await;
        if let Some(listing) = fresh(&account) {
            return Ok(listing);
        }
        let started = Instant::now();
        let hosts = client.all_hosts().await?;
        let listing = Arc::new(Listing::new(started, hosts));
        *account.latest.lock() = Some(listing.clone());
        Ok(listing)
    }

    /// The account's newest listing, if one was fetched.
    pub fn latest(&self, client: &ProviderClient) -> Option<Arc<Listing>> {
        self.account(client).latest.lock().clone()
    }

    /// Drops the account's listing: after an operation changed a host, the next look must
    /// be fresh.
    pub fn invalidate(&self, client: &ProviderClient) {
        *self.account(client).latest.lock() = None;
    }

    /// The account's create gate (see [`AccountHosts::create_gate`]).
    pub fn create_gate(&self, client: &ProviderClient) -> Arc<tokio::sync::RwLock<()>> {
        self.account(client).create_gate.clone()
    }

    /// The package and image a request names, from catalogues cached for ten minutes.
    pub async fn expected(
        &self,
        client: &ProviderClient,
        request: &CreateRequest,
    ) -> Result<Catalogued, ProviderError> {
        let package = self.package(client, &request.package_id).await?;
        let account = self.account(client);
        let mut slot = account.images.lock().await;
        let images = match slot.as_ref().filter(|(at, _)| at.elapsed() < PACKAGES_TTL) {
            Some((_, c)) => c.clone(),
            None => {
                let c = Arc::new(client.images().await?);
                *slot = Some((Instant::now(), c.clone()));
                c
            }
        };
        let image = images
            .iter()
            .find(|i| i.image_id.as_deref() == Some(request.image_id.as_str()))
            .cloned();
        Ok(Catalogued { package, image })
    }

    /// The rental package with this id, from a catalogue cached for ten minutes.
    pub async fn package(
        &self,
        client: &ProviderClient,
        package_id: &str,
    ) -> Result<Option<Package>, ProviderError> {
        let account = self.account(client);
        let mut slot = account.packages.lock().await;
        let catalogue = match slot.as_ref().filter(|(at, _)| at.elapsed() < PACKAGES_TTL) {
            Some((_, c)) => c.clone(),
            None => {
                let c = Arc::new(client.packages(1).await?);
                *slot = Some((Instant::now(), c.clone()));
                c
            }
        };
        Ok(catalogue
            .iter()
            .find(|p| p.package_id.as_deref() == Some(package_id))
            .cloned())
    }
}
