//! The budget controller: keeps each budget's window and figures current, and returns the
//! reservations of creates that never recorded themselves (the operator stopped between
//! the reservation and the recording).

use super::{Budgets, book};
use crate::api::Reservation;
use crate::api::{RentedHost, RentedHostBudget};
use crate::kit::{self, Error};
use crate::leader::Leadership;
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

/// A budget looked at again now and then, whatever the watch says.
const RESYNC: Duration = Duration::from_secs(600);

/// What the budget controller is given.
pub struct Settings {
    /// Watch only this namespace (default: all namespaces).
    pub namespace: Option<String>,
    /// How long this process must have seen a reservation before sweeping it
    /// ([`super::seen_before_sweep`]).
    pub seen_before_sweep: Duration,
}

struct Context {
    client: Client,
    budgets: Arc<Budgets>,
    leadership: Leadership,
    store: Store<RentedHostBudget>,
    sightings: Sightings,
    seen_before_sweep: Duration,
}

/// A reservation: the create (object uid, `since`) it holds for.
type Create = (String, String);

fn create_of(r: &Reservation) -> Create {
    (r.uid.clone(), r.since.clone())
}

/// Budgets forgotten at most this often (those deleted): a sweep of all for each would
/// cost the square of their number.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// When this process first saw each reservation of each budget (by uid), on the monotonic
/// clock: the sweep's own measure of a reservation's age, which no wall clock can step.
#[derive(Default)]
struct Sightings(Mutex<SightingsOf>);

#[derive(Default)]
struct SightingsOf {
    budgets: HashMap<String, HashMap<Create, Instant>>,
    pruned: Option<Instant>,
}

impl Sightings {
    /// Notes what `budget` holds at `now` (forgetting what it no longer holds, and now and
    /// then the budgets not among the uids `live` gives); returns since when each
    /// reservation has been seen.
    fn note(
        &self,
        budget: &RentedHostBudget,
        live: impl FnOnce() -> HashSet<String>,
        now: Instant,
    ) -> HashMap<Create, Instant> {
        let mut guard = self.0.lock();
        let SightingsOf {
            budgets: all,
            pruned,
        } = &mut *guard;
        if pruned.is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY) {
            let live = live();
            all.retain(|uid, _| live.contains(uid));
            *pruned = Some(now);
        }
        let before = all
            .remove(&budget.uid().unwrap_or_default())
            .unwrap_or_default();
        let held = budget.status.iter().flat_map(|s| &s.reservations);
        let seen: HashMap<Create, Instant> = held
            .map(|r| {
                let create = create_of(r);
                let first = before.get(&create).copied().unwrap_or(now);
                (create, first)
            })
            .collect();
        all.insert(budget.uid().unwrap_or_default(), seen.clone());
        seen
    }
}

/// Runs the budget controller until `shutdown` completes.
pub async fn run(
    client: Client,
    budgets: Arc<Budgets>,
    settings: Settings,
    leadership: Leadership,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<RentedHostBudget> = kit::scoped(&client, settings.namespace.as_deref());
    let (store, writer) = reflector::store();
    let changes = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|b| b.metadata.managed_fields = None)
        .reflect(writer)
        .applied_objects();
    let ctx = Arc::new(Context {
        client,
        budgets,
        leadership,
        store: store.clone(),
        sightings: Sightings::default(),
        seen_before_sweep: settings.seen_before_sweep,
    });
    Controller::for_stream(changes, store)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "budget reconcile failed");
            }
        })
        .await;
}

/// Of the reservations `expired` by the wall clock, those seen here (`seen`) for at least
/// `gate` by the monotonic clock at `clock`; and how long until the next of the others is.
fn ripe(
    expired: Vec<Reservation>,
    seen: &HashMap<Create, Instant>,
    clock: Instant,
    gate: Duration,
) -> (Vec<Reservation>, Option<Duration>) {
    // Not noted (it cannot be: both come from one budget) counts as seen just now.
    let first = |r: &Reservation| seen.get(&create_of(r)).copied().unwrap_or(clock);
    let (ripe, unripe): (Vec<Reservation>, Vec<Reservation>) = expired
        .into_iter()
        .partition(|r| clock.duration_since(first(r)) >= gate);
    // Past the end of time (a gate no clock reaches): never.
    let next = unripe
        .iter()
        .filter_map(|r| first(r).checked_add(gate))
        .map(|at| at.saturating_duration_since(clock))
        .min();
    (ripe, next)
}

fn error_policy(budget: Arc<RentedHostBudget>, error: &Error, _: Arc<Context>) -> Action {
    if let Some(wait) = error.routine_retry() {
        return Action::requeue(wait);
    }
    let reason = error.reason();
    tracing::warn!(namespace = budget.namespace(), name = budget.name_any(), reason, %error, "budget reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(budget: Arc<RentedHostBudget>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Standbys note what they see too: a replica taking over sweeps without a wait of its
    // own for what it has long seen.
    let live = || ctx.store.state().iter().filter_map(|b| b.uid()).collect();
    let clock = Instant::now();
    let seen = ctx.sightings.note(&budget, live, clock);
    if !ctx.leadership.is_leading() {
        return Err(Error::NotLeading);
    }
    let now = Timestamp::now();
    let objects: Api<RentedHost> = kit::beside(&ctx.client, &*budget);
    let expired = book::expired(&budget, now);
    let (ripe, ripening) = ripe(expired, &seen, clock, ctx.seen_before_sweep);
    for reservation in ripe {
        // A quorum read: the object records the create (`createPending.since`) before
        // createRent is called, and the host it rented with it (`rentedSince`).
        let object = objects
            .get_opt(&reservation.object)
            .await
            .map_err(Error::from_kube)?;
        let (uid, since) = (&reservation.uid, &reservation.since);
        let settle = book::settle(uid, since, object.as_ref());
        if settle != book::Settle::Keep {
            tracing::info!(budget = %budget.name_any(), object = %reservation.object, amount = %reservation.amount, ?settle, "settling the reservation of a create its operator left unsettled");
        }
        ctx.budgets.settle_logged(&budget, uid, since, settle).await;
    }
    ctx.budgets.refresh(&budget, now).await?;
    // Back when the window turns, or the next reservation may be swept.
    let status = budget.status.clone().unwrap_or_default();
    let next_expiry = status
        .reservations
        .iter()
        .filter_map(|r| r.expires.parse::<Timestamp>().ok())
        .filter(|at| *at > now)
        .min();
    let turn = book::window_end(budget.spec.window, now);
    let wait = [next_expiry, turn]
        .into_iter()
        .flatten()
        .map(|at| Duration::try_from(at.duration_since(now)).unwrap_or_default())
        .chain(ripening)
        .fold(RESYNC, Duration::min);
    Ok(Action::requeue(wait + Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reservation(uid: &str, since: &str) -> Reservation {
        Reservation {
            object: format!("{uid}-object"),
            uid: uid.into(),
            since: since.into(),
            amount: "48".into(),
            window: "2026-12".into(),
            expires: "2026-12-06T10:00:00Z".into(),
        }
    }

    fn budget(uid: &str, held: &[Reservation]) -> RentedHostBudget {
        let mut b: RentedHostBudget = serde_json::from_value(serde_json::json!({
            "apiVersion": "xuandashi.dev/v1alpha1",
            "kind": "RentedHostBudget",
            "metadata": {"name": "team", "namespace": "ns", "uid": uid},
            "spec": {"limit": "480"},
        }))
        .unwrap();
        b.status = Some(crate::api::RentedHostBudgetStatus {
            reservations: held.to_vec(),
            ..Default::default()
        });
        b
    }

    fn uids(uids: &[&str]) -> impl FnOnce() -> HashSet<String> {
        let uids: HashSet<String> = uids.iter().map(|u| u.to_string()).collect();
        move || uids
    }

    #[test]
    fn a_reservation_is_seen_from_its_first_sighting_until_it_goes() {
        let sightings = Sightings::default();
        let t0 = Instant::now();
        let (a, b) = (reservation("a", "s1"), reservation("b", "s1"));
        let one = |r: &Reservation| vec![r.clone()];
        let seen = sightings.note(&budget("B", &one(&a)), uids(&["B"]), t0);
        assert_eq!(seen[&create_of(&a)], t0);
        let t1 = t0 + Duration::from_secs(5);
        let both = [a.clone(), b.clone()];
        let seen = sightings.note(&budget("B", &both), uids(&["B"]), t1);
        assert_eq!(seen[&create_of(&a)], t0, "kept from its first sighting");
        assert_eq!(seen[&create_of(&b)], t1);
        // Settled, then held again (the same create): seen anew.
        let t2 = t1 + Duration::from_secs(5);
        sightings.note(&budget("B", &one(&b)), uids(&["B"]), t2);
        let seen = sightings.note(&budget("B", &both), uids(&["B"]), t2);
        assert_eq!(seen[&create_of(&a)], t2);
        assert_eq!(seen[&create_of(&b)], t1);
        // Another budget holds the same create on its own clock.
        let seen = sightings.note(&budget("C", &one(&a)), uids(&["C"]), t2);
        assert_eq!(seen[&create_of(&a)], t2);
        // A deleted budget is forgotten at the next pruning, not at every note.
        let keys = |s: &Sightings| {
            let mut keys: Vec<String> = s.0.lock().budgets.keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(&sightings), ["B", "C"]);
        let t3 = t0 + PRUNE_EVERY;
        sightings.note(&budget("C", &one(&a)), uids(&["C"]), t3);
        assert_eq!(keys(&sightings), ["C"]);
        // Noted from the first sighting on, pruned or not.
        let seen = sightings.note(&budget("C", &one(&a)), uids(&["C"]), t3);
        assert_eq!(seen[&create_of(&a)], t2);
    }

    #[test]
    fn only_what_was_seen_here_for_the_gate_is_swept_whatever_the_wall_clock_says() {
        let gate = Duration::from_secs(180);
        let t0 = Instant::now();
        let (old, new) = (reservation("old", "s"), reservation("new", "s"));
        let seen = HashMap::from([
            (create_of(&old), t0),
            (create_of(&new), t0 + Duration::from_secs(100)),
        ]);
        let expired = vec![old.clone(), new.clone()];
        // Both expired by the wall clock (stepped forward, say) 10 s after the first
        // sighting: neither is swept; the first ripens in 170 s.
        let (ripe_now, next) = ripe(expired.clone(), &seen, t0 + Duration::from_secs(10), gate);
        assert!(ripe_now.is_empty());
        assert_eq!(next, Some(Duration::from_secs(170)));
        let (ripe_now, next) = ripe(expired.clone(), &seen, t0 + gate, gate);
        assert_eq!(ripe_now, vec![old.clone()]);
        assert_eq!(next, Some(Duration::from_secs(100)));
        let (ripe_now, next) = ripe(expired, &seen, t0 + Duration::from_secs(280), gate);
        assert_eq!(ripe_now, vec![old, new]);
        assert_eq!(next, None);
        // One this process never noted counts as seen just now.
        let (ripe_now, next) = ripe(vec![reservation("x", "s")], &HashMap::new(), t0, gate);
        assert!(ripe_now.is_empty());
        assert_eq!(next, Some(gate));
        // A gate past the end of time: never ripe, and no panic.
        let (ripe_now, next) = ripe(vec![reservation("old", "s")], &seen, t0, Duration::MAX);
        assert!(ripe_now.is_empty());
        assert_eq!(next, None);
    }
}
