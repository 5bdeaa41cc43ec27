//! One room per provider account: its clients (each with its token cache and rate limit),
//! its listing, its catalogue and the prices derived from it, the create gate, and the
//! objects that observe their hosts on it. Whatever is per account (sharding, a budget, a
//! priority limiter) is a field of [`Account`] or a filter on [`Accounts`].

mod catalogue;
mod listing;
mod releases;

pub use catalogue::{CURRENCY, Catalogued, REFRESH, price_of};
pub use listing::{Listing, Unlisted};
pub use releases::MEMORY as RELEASES_REMEMBERED;

use crate::api::{CreateRequest, Price, RentedHost};
use crate::provider::{
    CallObserver, ClientSettings, Credentials, Host, ProviderClient, ProviderError,
};
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What this process knows of one provider account.
#[derive(Default)]
pub struct Account {
    listings: listing::Listings,
    catalogue: catalogue::Catalogue,
    /// Creates hold it shared from before their call until its host id is written; a
    /// resolution or an adoption holds it exclusively while it reads the claims and writes
    /// its answer (never while it lists), so that every host a listing showed is claimed
    /// by then, or is the host of another pending create.
    create_gate: tokio::sync::RwLock<()>,
    releases: releases::Releases,
    /// Releases hold it shared while a delete may take effect; a listing that must prove
    /// an absence holds it exclusively while it is read, since a deletion shifts the pages
    /// under it (a host may be skipped).
    shifting: Arc<tokio::sync::RwLock<()>>,
    watched: Mutex<Watched>,
    /// Someone else was seen renting here (hosts no create of ours made).
    someone_else_rents: AtomicBool,
}

/// The objects that observe their hosts on an account, and the client the poller lists it
/// with (the last one they registered through).
#[derive(Default)]
struct Watched {
    client: Option<Arc<ProviderClient>>,
    objects: HashSet<ObjectRef<RentedHost>>,
}

/// An account reached through one Secret's credentials: the client that calls, and the
/// account's shared state.
#[derive(Clone)]
pub struct Access {
    pub client: Arc<ProviderClient>,
    account: Arc<Account>,
}

impl Access {
    /// The provider's account id.
    pub fn id(&self) -> &str {
        self.client.account()
    }

    /// A listing whose fetch started no earlier than `not_before`.
    pub async fn listing(&self, not_before: Instant) -> Result<Arc<Listing>, ProviderError> {
        self.listing_showing(not_before, &|_| {}).await
    }

    /// [`Access::listing`], telling `shown` of each host rented since the newest listing
    /// as soon as a page shows it (its object may look before the listing is complete).
    pub async fn listing_showing(
        &self,
        not_before: Instant,
        shown: &(dyn Fn(&str) + Sync),
    ) -> Result<Arc<Listing>, ProviderError> {
        let releases = &self.account.releases;
        let listings = &self.account.listings;
        listings
            .fresh(&self.client, releases, not_before, None, shown)
            .await
    }

    /// A listing that can prove a host absent: begun no earlier than `not_before`, and read
    /// while no release of ours could shift its pages (releases wait meanwhile).
    pub async fn quiet_listing(&self, not_before: Instant) -> Result<Arc<Listing>, ProviderError> {
        let (releases, shifting) = (&self.account.releases, &*self.account.shifting);
        let listings = &self.account.listings;
        listings
            .fresh(&self.client, releases, not_before, Some(shifting), &|_| {})
            .await
    }

    /// Host `id` is being released: until the guard drops, no listing proves an absence
    /// (one that must waits), and the host is remembered as released for resolutions.
    pub async fn releasing(&self, id: &str) -> Releasing {
        let shifting = self.account.shifting.clone().read_owned().await;
        self.account.releases.begin(id);
        Releasing {
            account: self.account.clone(),
            id: id.to_string(),
            _shifting: shifting,
        }
    }

    /// The hosts this process was releasing, or released, after `since`: they may show in
    /// a listing begun then though their objects are gone. `None` when `since` is older
    /// than releases are remembered ([`RELEASES_REMEMBERED`]).
    pub fn released_since(&self, since: Instant) -> Option<HashSet<String>> {
        self.account.releases.since(since)
    }

    /// Every host this process is releasing or released within [`RELEASES_REMEMBERED`]:
    /// each belonged to an object, so it is no pending create's host.
    pub fn released(&self) -> HashSet<String> {
        self.account.releases.all()
    }

    /// The newest listing, if one was fetched.
    pub fn latest_listing(&self) -> Option<Arc<Listing>> {
        self.account.listings.latest()
    }

    /// The create gate (see [`Account::create_gate`]).
    pub fn create_gate(&self) -> &tokio::sync::RwLock<()> {
        &self.account.create_gate
    }

    /// The package and image a request names, from catalogues at most [`REFRESH`] old.
    pub async fn expected(&self, request: &CreateRequest) -> Result<Catalogued, ProviderError> {
        self.account.catalogue.expected(&self.client, request).await
    }

    /// Fetches the package list for prices when it is due (see `Catalogue::refresh`).
    pub async fn refresh_prices(&self) {
        self.account.catalogue.refresh(&self.client).await
    }

    /// The price of `request` from the package list as last fetched, without waiting.
    pub fn price(&self, request: &CreateRequest) -> Option<Price> {
        self.account.catalogue.price(request)
    }

    /// The price of `request` from a package list read successfully less than [`REFRESH`]
    /// ago (read now when older, or when the last read failed): a budget spends by it, so
    /// it never comes from a list that cannot be read now. `Err` says why it is not known.
    pub async fn fresh_price(&self, request: &CreateRequest) -> Result<Price, String> {
        let id = &request.package_id;
        match self.account.catalogue.package(&self.client, id).await {
            Ok(Some(package)) => catalogue::price_of(&package, &request.period).ok_or_else(|| {
                format!("package {id} has no readable price in the provider's package list")
            }),
            Ok(None) => Err(format!(
                "package {id} is not in the provider's package list (packAge/1)"
            )),
            Err(error) => Err(format!(
                "the provider's package list cannot be read ({error})"
            )),
        }
    }

    /// Whether someone else was seen renting on the account: then no lost create of the
    /// account is paired automatically.
    pub fn someone_else_rents(&self) -> bool {
        self.account.someone_else_rents.load(Ordering::Relaxed)
    }

    /// Says that someone else rents on the account; whether it was news.
    pub fn found_someone_else(&self) -> bool {
        !self
            .account
            .someone_else_rents
            .swap(true, Ordering::Relaxed)
    }

    /// Host `id` was rented just now: until a listing shows it, it is seen alone
    /// (`one/{id}`).
    pub fn rented(&self, id: &str) {
        self.account.listings.changed(id, false)
    }

    /// Host `id` was powered or rebooted just now: until a listing that began later shows
    /// it, it is seen alone (`one/{id}`), never as an older listing shows it.
    pub fn operated(&self, id: &str) {
        self.account.listings.changed(id, true)
    }

    /// Whether `listing` (if there is one) is the newest word on host `id`, or what is
    /// known of it since.
    pub fn unlisted(&self, id: &str, listing: Option<&Listing>) -> Unlisted {
        self.account.listings.unlisted(id, listing)
    }

    /// Asks `one/{id}` about a host rented after the newest listing began, once, when the
    /// rate limit has room for it, or when asking for the new hosts one by one costs fewer
    /// calls than listing the account (a large account) and no create, release or power
    /// change waits for the rate limit: the host, if the answer showed it. A listing serves
    /// it otherwise.
    pub async fn ask_alone(&self, id: &str) -> Option<Host> {
        let listings = &self.account.listings;
        // Never while creates, releases or power changes wait for the rate limit: the
        // listing that follows them serves every new host at once.
        let worth = self.client.has_headroom().await
            || (listings.cheaper_alone() && !self.client.acts_waiting().await);
        if !worth || !listings.take_ask(id) {
            return None;
        }
        let host = self.client.host(id).await.ok().flatten();
        self.account.listings.answered(id, host.clone());
        host
    }
}

/// A release under way (see [`Access::releasing`]).
pub struct Releasing {
    account: Arc<Account>,
    id: String,
    _shifting: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl Drop for Releasing {
    fn drop(&mut self) {
        self.account.releases.end(&self.id);
    }
}

/// Every account this process reaches, by account id.
pub struct Accounts {
    settings: ClientSettings,
    observer: Option<CallObserver>,
    /// One client per credentials: two Secrets may name one account with different app
    /// secrets, and each keeps its client (one nobody uses any more only costs its memory).
    clients: Mutex<HashMap<Credentials, Arc<ProviderClient>>>,
    accounts: Mutex<HashMap<String, Arc<Account>>>,
    /// An object waits for a host rented after the last listing.
    listing_wanted: AtomicBool,
}

impl Accounts {
    pub fn new(settings: ClientSettings, observer: Option<CallObserver>) -> Accounts {
        Accounts {
            settings,
            observer,
            clients: Mutex::default(),
            accounts: Mutex::default(),
            listing_wanted: AtomicBool::new(false),
        }
    }

    fn account(&self, id: &str) -> Arc<Account> {
        let mut accounts = self.accounts.lock();
        accounts.entry(id.to_string()).or_default().clone()
    }

    /// The account these credentials name, reached through them.
    pub fn access(&self, credentials: Credentials) -> Access {
        let client = {
            let mut clients = self.clients.lock();
            let (settings, observer) = (&self.settings, &self.observer);
            clients
                .entry(credentials.clone())
                .or_insert_with(|| {
                    let client =
                        ProviderClient::new(settings.clone(), credentials, observer.clone());
                    Arc::new(client)
                })
                .clone()
        };
        let account = self.account(client.account());
        Access { client, account }
    }

    /// The price of `request` on account `id` from its package list as last fetched.
    pub fn price(&self, id: &str, request: &CreateRequest) -> Option<Price> {
        let account = self.accounts.lock().get(id).cloned()?;
        account.catalogue.price(request)
    }

    /// `obj` observes its host on `access`'s account (and on no other).
    pub fn watch(&self, access: &Access, obj: &RentedHost) {
        let reference = ObjectRef::from_obj(obj);
        // Under the map's lock throughout: a poll never sees the object on no account.
        let accounts = self.accounts.lock();
        for (id, account) in accounts.iter() {
            if id != access.id() {
                account.watched.lock().objects.remove(&reference);
            }
        }
        let mut watched = access.account.watched.lock();
        watched.client = Some(access.client.clone());
        watched.objects.insert(reference);
    }

    /// Stops observing an object's host (a paused object), until it registers again.
    pub fn unwatch(&self, obj: &RentedHost) {
        let reference = ObjectRef::from_obj(obj);
        for account in self.accounts.lock().values() {
            account.watched.lock().objects.remove(&reference);
        }
    }

    /// An object that is gone: unwatched, and its host's first look forgotten.
    pub fn forget(&self, obj: &RentedHost) {
        self.unwatch(obj);
        if let Some(id) = obj.status.as_ref().and_then(|s| s.host_id.as_ref()) {
            for account in self.accounts.lock().values() {
                account.listings.forget(id);
            }
        }
    }

    /// Each account that objects observe hosts on, with those objects.
    pub fn watched(&self) -> Vec<(Access, Vec<ObjectRef<RentedHost>>)> {
        let accounts = self.accounts.lock();
        accounts
            .values()
            .filter_map(|account| {
                let watched = account.watched.lock();
                let client = watched.client.clone()?;
                let objects: Vec<_> = watched.objects.iter().cloned().collect();
                let access = Access {
                    client,
                    account: account.clone(),
                };
                (!objects.is_empty()).then_some((access, objects))
            })
            .collect()
    }

    /// Each account that objects observe hosts on (without the objects).
    pub fn watched_accounts(&self) -> Vec<Access> {
        let accounts = self.accounts.lock();
        accounts
            .values()
            .filter_map(|account| {
                let watched = account.watched.lock();
                let client = watched
                    .client
                    .clone()
                    .filter(|_| !watched.objects.is_empty())?;
                let account = account.clone();
                Some(Access { client, account })
            })
            .collect()
    }

    /// Stops `obj` being observed on `access`'s account (it is gone from the cache).
    pub fn drop_watched(&self, access: &Access, obj: &ObjectRef<RentedHost>) {
        access.account.watched.lock().objects.remove(obj);
    }

    /// Asks for a poll as soon as the fast poll interval allows.
    pub fn want_listing(&self) {
        self.listing_wanted.store(true, Ordering::Relaxed);
    }

    /// Whether a poll was wanted (and is then no longer). Listing pages wait behind every
    /// other call of their account, so a wanted poll never delays one.
    pub fn take_wanted_listing(&self) -> bool {
        self.listing_wanted.swap(false, Ordering::Relaxed)
    }

    /// Whether any watched object satisfies `pred` (say, a host in motion).
    pub fn any_watched(&self, mut pred: impl FnMut(&ObjectRef<RentedHost>) -> bool) -> bool {
        let accounts = self.accounts.lock();
        accounts
            .values()
            .any(|account| account.watched.lock().objects.iter().any(&mut pred))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_secrets_of_one_account_keep_their_own_clients_and_share_the_account() {
        let accounts = Accounts::new(ClientSettings::default(), None);
        let a = accounts.access(Credentials::new("acct", "old"));
        let b = accounts.access(Credentials::new("acct", "new"));
        let a_again = accounts.access(Credentials::new("acct", "old"));
        assert!(!Arc::ptr_eq(&a.client, &b.client));
        assert!(
            Arc::ptr_eq(&a.client, &a_again.client),
            "neither evicts the other"
        );
        assert!(Arc::ptr_eq(&a.account, &b.account), "one account, one room");
        let other = accounts.access(Credentials::new("other", "old"));
        assert!(!Arc::ptr_eq(&a.account, &other.account));
    }
}
