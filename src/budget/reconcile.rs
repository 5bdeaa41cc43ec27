//! The budget controller: keeps each budget's window and figures current, and returns the
//! reservations of creates that never recorded themselves (the operator stopped between
//! the reservation and the recording).

use super::{Budgets, book};
use crate::api::{RentedHost, RentedHostBudget};
use crate::kit::{self, Error};
use crate::leader::Leadership;
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// A budget looked at again now and then, whatever the watch says.
const RESYNC: Duration = Duration::from_secs(600);

struct Context {
    client: Client,
    budgets: Arc<Budgets>,
    leadership: Leadership,
}

/// Runs the budget controller until `shutdown` completes.
pub async fn run(
    client: Client,
    budgets: Arc<Budgets>,
    namespace: Option<String>,
    leadership: Leadership,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<RentedHostBudget> = kit::scoped(&client, namespace.as_deref());
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

fn error_policy(budget: Arc<RentedHostBudget>, error: &Error, _: Arc<Context>) -> Action {
    if let Some(wait) = error.routine_retry() {
        return Action::requeue(wait);
    }
    let reason = error.reason();
    tracing::warn!(namespace = budget.namespace(), name = budget.name_any(), reason, %error, "budget reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(budget: Arc<RentedHostBudget>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leadership.is_leading() {
        return Err(Error::NotLeading);
    }
    let now = Timestamp::now();
    let objects: Api<RentedHost> = kit::beside(&ctx.client, &*budget);
    for reservation in book::expired(&budget, now) {
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
        .fold(RESYNC, Duration::min);
    Ok(Action::requeue(wait + Duration::from_secs(1)))
}
