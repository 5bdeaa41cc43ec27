//! Observation at N/25 cost: one task lists each account's hosts (`mypage`, 25 a page) once
//! per poll interval and wakes only the objects whose host changed on the provider's side.
//! Objects register here when they observe their host; deleted objects drop out.

use super::connections::{Connections, digest};
use super::hosts::HostDirectory;
use super::{Context, decision, foreign};
use crate::api::RentedHost;
use crate::provider::ProviderClient;
use kube::runtime::reflector::{ObjectRef, Store};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Default)]
struct Watched {
    client: Option<Arc<ProviderClient>>,
    objects: HashSet<ObjectRef<RentedHost>>,
}

/// Which objects observe their hosts through which account.
#[derive(Default)]
pub struct Poller {
    accounts: Mutex<HashMap<String, Watched>>,
    /// The connection Secrets as this process wrote them.
    pub connections: Connections,
    /// An object waits for a host rented after the last listing.
    listing_wanted: AtomicBool,
    /// Hosts rented after a listing that were asked for alone (`one/{id}`), once each, and
    /// whether the answer showed the host.
    asked_alone: Mutex<HashMap<String, bool>>,
    /// Accounts someone else was found renting on (told once each).
    shared: Mutex<HashSet<String>>,
    /// Every host id an object of this process's sight ever claimed: a host let go
    /// (`Orphan`) is not someone else's.
    ever_claimed: Mutex<HashSet<String>>,
}

impl Poller {
    pub fn register(&self, client: &Arc<ProviderClient>, obj: &RentedHost) {
        let mut accounts = self.accounts.lock();
        let reference = ObjectRef::from_obj(obj);
        for (account, watched) in accounts.iter_mut() {
            if account != client.account() {
                watched.objects.remove(&reference);
            }
        }
        let watched = accounts.entry(client.account().to_string()).or_default();
        watched.client = Some(client.clone());
        watched.objects.insert(reference);
    }

    /// Stops observing an object's host (a paused object), until it registers again.
    pub fn unregister(&self, obj: &RentedHost) {
        let reference = ObjectRef::from_obj(obj);
        for watched in self.accounts.lock().values_mut() {
            watched.objects.remove(&reference);
        }
    }

    /// Asks for a poll as soon as every account's rate limit has room for it.
    pub fn want_listing(&self) {
        self.listing_wanted.store(true, Ordering::Relaxed);
    }

    /// Whether a wanted poll can run now (and is then no longer wanted).
    async fn take_wanted_listing(&self) -> bool {
        if !self.listing_wanted.load(Ordering::Relaxed) {
            return false;
        }
        for (client, _) in self.snapshot() {
            if !client.has_headroom().await {
                return false;
            }
        }
        self.listing_wanted.swap(false, Ordering::Relaxed)
    }

    /// Whether a host rented after the last listing may be asked for alone: the first
    /// time only (a reconcile on a cache that lags our own writes must not ask again).
    pub fn first_look(&self, id: &str) -> bool {
        let mut asked = self.asked_alone.lock();
        asked.insert(id.to_string(), false).is_none()
    }

    pub fn found_alone(&self, id: &str) {
        self.asked_alone.lock().insert(id.to_string(), true);
    }

    /// Whether asking for the host alone showed it.
    pub fn seen_alone(&self, id: &str) -> bool {
        self.asked_alone.lock().get(id).copied().unwrap_or(false)
    }

    /// Whether someone else was seen renting on `account` (hosts no create of ours made):
    /// then no lost create of the account is paired automatically.
    pub fn someone_else_rents(&self, account: &str) -> bool {
        self.shared.lock().contains(account)
    }

    pub fn forget(&self, obj: &RentedHost) {
        self.unregister(obj);
        self.connections.forget(&ObjectRef::from_obj(obj));
        if let Some(id) = obj.status.as_ref().and_then(|s| s.host_id.as_ref()) {
            self.asked_alone.lock().remove(id);
        }
    }

    fn snapshot(&self) -> Vec<(Arc<ProviderClient>, Vec<ObjectRef<RentedHost>>)> {
        let accounts = self.accounts.lock();
        accounts
            .values()
            .filter_map(|w| Some((w.client.clone()?, w.objects.iter().cloned().collect())))
            .filter(|(_, objects): &(_, Vec<_>)| !objects.is_empty())
            .collect()
    }

    /// One poll of every account: the objects to reconcile.
    pub async fn poll_once(
        &self,
        hosts: &HostDirectory,
        store: &Store<RentedHost>,
    ) -> Vec<ObjectRef<RentedHost>> {
        let mut wake = Vec::new();
        for (client, objects) in self.snapshot() {
            let listing = match hosts.listing(&client, Instant::now()).await {
                Ok(listing) => listing,
                Err(error) => {
                    tracing::warn!(account = client.account(), %error, "polling hosts failed");
                    continue;
                }
            };
            for reference in objects {
                let Some(obj) = store.get(&reference) else {
                    let mut accounts = self.accounts.lock();
                    if let Some(w) = accounts.get_mut(client.account()) {
                        w.objects.remove(&reference);
                    }
                    continue;
                };
                let Some(id) = obj.status.as_ref().and_then(|s| s.host_id.clone()) else {
                    continue;
                };
                let host = listing.get(&id);
                let login_changed = host.is_some_and(|h| {
                    !self
                        .connections
                        .current(&obj, digest(&decision::connection_data(h)))
                });
                if decision::host_changed(&obj, host) || login_changed {
                    wake.push(reference);
                }
            }
        }
        wake
    }

    /// Whether any watched object has a host in motion (starting, stopping, just rented).
    fn any_in_motion(&self, store: &Store<RentedHost>) -> bool {
        let accounts = self.accounts.lock();
        accounts
            .values()
            .flat_map(|w| w.objects.iter())
            .any(|r| store.get(r).is_some_and(|o| decision::in_motion(&o)))
    }
}

/// Counts the hosts on each watched account that no create of ours explains
/// (`rentedhost_foreign_hosts`), and says once per account that someone else rents there.
fn count_foreign(ctx: &Context) {
    let mut claimed = ctx.poller.ever_claimed.lock();
    claimed.extend(ctx.every_claim());
    let pending: Vec<_> = ctx
        .store
        .state()
        .iter()
        .filter_map(|o| super::resolution::PendingCreate::of(o))
        .collect();
    let window = super::resolution::Window {
        skew: ctx.config.clock_skew,
        call_limit: ctx.config.provider.timeout * 2,
    };
    let mut total = 0;
    for (client, _) in ctx.poller.snapshot() {
        let Some(listing) = ctx.hosts.latest(&client) else {
            continue;
        };
        let began = jiff::Timestamp::now()
            - jiff::SignedDuration::try_from(listing.started.elapsed()).unwrap_or_default();
        let sight = foreign::Sight {
            claimed: &claimed,
            pending: &pending,
            window,
            since: ctx.started,
            settled_before: foreign::settled_before(began, window.call_limit, window.skew),
        };
        let theirs = foreign::foreign(&listing.hosts, &sight);
        total += theirs.len() as i64;
        if !theirs.is_empty()
            && ctx
                .poller
                .shared
                .lock()
                .insert(client.account().to_string())
        {
            let advice = "from now on a lost createRent answer on this account is left to a person, never paired with a host automatically (--shared-account says so from the start)";
            tracing::warn!(
                account = client.account(),
                hosts = ?theirs,
                "someone else rents on this provider account: hosts appeared that no create of this operator made; {advice}"
            );
        }
    }
    ctx.metrics.foreign_hosts.set(total);
}

/// Polls every poll interval (jittered ±10 %), every fast poll interval while a host is in
/// motion, and within a second of a host rented after the last listing being wanted (once
/// the rate limit has room), until the receiver of the wakes is gone.
pub async fn run(ctx: Arc<Context>, wake: mpsc::Sender<ObjectRef<RentedHost>>) {
    let (interval, fast) = (ctx.config.poll_interval, ctx.config.fast_poll_interval);
    let tick = fast.min(interval).min(Duration::from_secs(1));
    let mut last = Instant::now();
    let mut next = interval.mul_f64(0.9 + 0.2 * rand::random_range(0.0..1.0));
    loop {
        tokio::time::sleep(tick).await;
        let elapsed = last.elapsed();
        let due = elapsed >= next
            || (elapsed >= fast && ctx.poller.any_in_motion(&ctx.store))
            || ctx.poller.take_wanted_listing().await;
        if !due {
            continue;
        }
        last = Instant::now();
        next = interval.mul_f64(0.9 + 0.2 * rand::random_range(0.0..1.0));
        let changed = ctx.poller.poll_once(&ctx.hosts, &ctx.store).await;
        count_foreign(&ctx);
        for reference in changed {
            if wake.send(reference).await.is_err() {
                return;
            }
        }
    }
}
