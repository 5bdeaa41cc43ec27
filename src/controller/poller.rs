//! Observation at N/25 cost: one task lists each account's hosts (`mypage`, 25 a page) once
//! per poll interval and wakes only the objects whose host changed on the provider's side.
//! Objects register with their account when they observe their host; deleted objects drop
//! out.

use super::connections::digest;
use super::{Context, decision, foreign};
use crate::api::RentedHost;
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One poll of every account: the objects to reconcile. Objects whose host was rented
/// since the newest listing are woken (`early`) as soon as a page shows it.
async fn poll_once(
    ctx: &Context,
    early: &mpsc::Sender<ObjectRef<RentedHost>>,
) -> Vec<ObjectRef<RentedHost>> {
    let mut wake = Vec::new();
    for (access, objects) in ctx.accounts.watched() {
        let by_host: HashMap<String, &ObjectRef<RentedHost>> = objects
            .iter()
            .filter_map(|r| Some((ctx.store.get(r)?.status.as_ref()?.host_id.clone()?, r)))
            .collect();
        let shown = |id: &str| {
            if let Some(reference) = by_host.get(id) {
                // A full queue loses nothing: the poll's end wakes it.
                let _ = early.try_send((*reference).clone());
            }
        };
        let listing = match access.listing_showing(Instant::now(), &shown).await {
            Ok(listing) => listing,
            Err(error) => {
                tracing::warn!(account = access.id(), %error, "polling hosts failed");
                continue;
            }
        };
        for reference in objects {
            let Some(obj) = ctx.store.get(&reference) else {
                ctx.accounts.drop_watched(&access, &reference);
                continue;
            };
            let Some(id) = obj.status.as_ref().and_then(|s| s.host_id.clone()) else {
                continue;
            };
            let host = listing.get(&id);
            let login_changed = host.is_some_and(|h| {
                !ctx.connections
                    .current(&obj, digest(&decision::connection_data(h)))
            });
            if decision::host_changed(&obj, host) || login_changed {
                wake.push(reference);
            }
        }
    }
    wake
}

/// How long listing every watched account takes at the pages' share of its rate limit.
fn listing_time(ctx: &Context) -> Duration {
    let seconds = ctx
        .accounts
        .watched_accounts()
        .iter()
        .filter_map(|access| {
            let listing = access.latest_listing()?;
            let pages = listing.hosts.len() / crate::provider::PAGE_SIZE as usize + 1;
            Some(pages as f64 / access.client.listing_rate())
        })
        .fold(0.0, f64::max);
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
}

/// The age of the oldest newest listing of the watched accounts.
fn oldest_listing(ctx: &Context) -> Duration {
    ctx.accounts
        .watched_accounts()
        .iter()
        .filter_map(|access| access.latest_listing())
        .map(|listing| listing.started.elapsed())
        .max()
        .unwrap_or_default()
}

/// How long a poll may wait for creates, releases or power changes to drain.
const DEFERRED_AT_MOST: Duration = Duration::from_secs(300);

/// Whether creates, releases or power changes wait for the budget of a watched account.
fn acts_queued(ctx: &Context) -> bool {
    let accounts = ctx.accounts.watched_accounts();
    accounts.iter().any(|access| access.client.acts_queued())
}

/// Whether any watched object has a host in motion (starting, stopping, just rented).
fn any_in_motion(ctx: &Context) -> bool {
    ctx.accounts
        .any_watched(|r| ctx.store.get(r).is_some_and(|o| decision::in_motion(&o)))
}

/// Counts the hosts on each watched account that no create of ours explains
/// (`rentedhost_foreign_hosts`), and says once per account that someone else rents there.
fn count_foreign(ctx: &Context) {
    ctx.ledger
        .with_ever_claimed(|claimed| count_foreign_among(ctx, claimed));
}

fn count_foreign_among(ctx: &Context, claimed: &std::collections::HashSet<String>) {
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
    for access in ctx.accounts.watched_accounts() {
        let Some(listing) = access.latest_listing() else {
            continue;
        };
        let began = jiff::Timestamp::now()
            - jiff::SignedDuration::try_from(listing.started.elapsed()).unwrap_or_default();
        let sight = foreign::Sight {
            claimed,
            pending: &pending,
            window,
            since: ctx.started,
            settled_before: foreign::settled_before(began, window.call_limit, window.skew),
        };
        let theirs = foreign::foreign(&listing.hosts, &sight);
        total += theirs.len() as i64;
        if !theirs.is_empty() && access.found_someone_else() {
            let advice = "from now on a lost createRent answer on this account is left to a person, never paired with a host automatically (--shared-account says so from the start)";
            tracing::warn!(
                account = access.id(),
                hosts = ?theirs,
                "someone else rents on this provider account: hosts appeared that no create of this operator made; {advice}"
            );
        }
    }
    ctx.metrics.foreign_hosts.set(total);
}

/// Polls every poll interval (jittered ±10 %, stretched to what the listing pages' share of
/// the rate limit allows), and every fast poll interval while a host is in motion or a
/// host rented after the last listing is not seen yet, until the receiver of the wakes is
/// gone; never while calls that spend or change something wait for their turn, up to
/// twice the poll interval or five minutes.
pub async fn run(ctx: Arc<Context>, wake: mpsc::Sender<ObjectRef<RentedHost>>) {
    let (interval, fast) = (ctx.config.poll_interval, ctx.config.fast_poll_interval);
    let tick = fast.min(interval).min(Duration::from_secs(1));
    // A poll wanted at start runs at once.
    let mut last = Instant::now()
        .checked_sub(fast)
        .unwrap_or_else(Instant::now);
    let mut next = interval.mul_f64(0.9 + 0.2 * rand::random_range(0.0..1.0));
    loop {
        tokio::time::sleep(tick).await;
        ctx.metrics
            .listing_age
            .set(oldest_listing(&ctx).as_secs_f64());
        let elapsed = last.elapsed();
        // While creates, releases or power changes wait for the budget, a listing would only
        // take turns from them and miss the hosts they rent while it is read (the burst's
        // hosts would need another): it waits until they drain, for a while.
        if elapsed < (interval * 2).max(DEFERRED_AT_MOST) && acts_queued(&ctx) {
            continue;
        }
        // Wanted (a host rented after the last listing not seen yet) or in motion: at most
        // once per fast poll interval.
        let due = elapsed >= next
            || (elapsed >= fast && (ctx.accounts.take_wanted_listing() || any_in_motion(&ctx)));
        if !due {
            continue;
        }
        last = Instant::now();
        let changed = poll_once(&ctx, &wake).await;
        // A listing that takes longer than the poll at the pages' share of the rate limit
        // stretches the poll: creates, releases and power changes keep the rest.
        next = interval
            .max(listing_time(&ctx))
            .mul_f64(0.9 + 0.2 * rand::random_range(0.0..1.0));
        count_foreign(&ctx);
        for reference in changed {
            if wake.send(reference).await.is_err() {
                return;
            }
        }
    }
}
