//! The create step: record the pending create, call createRent within its deadline, write
//! the answer.

use super::*;
use crate::api::{CreateRequest, Reservation};
use crate::budget::{RECORD_WITHIN, Reserved, SWEEP_AFTER};

pub(super) async fn create(
    obj: RentedHost,
    provider: &Access,
    ctx: &Context,
) -> Result<Outcome, Error> {
    // A new `retry-requested-at` value goes through whatever the backoff says (once: the
    // create records it).
    let held = ctx
        .holds
        .create_held_for(&obj)
        .or_else(|| ctx.siblings.held_for(&obj));
    if let Some(left) = held
        && decision::retry_requested(&obj).is_none()
    {
        return Ok(Outcome::Done(Action::requeue(left)));
    }
    // Every budget of the namespace holds the host's prepaid total before the create is
    // recorded; a create that does not fit is not sent.
    let since = now();
    let started = Instant::now();
    let reservation = match reserve(&obj, provider, ctx, since).await? {
        Reserving::Held(reservation) => reservation,
        Reserving::NotSent(t) => {
            return finish(ctx, &obj, *t, "CreateRent").await.map(Outcome::Done);
        }
        Reserving::Unreadable(e) => {
            tracing::warn!(error = %e, "no create while the budgets cannot be read");
            return Ok(Outcome::Done(Action::requeue(Duration::from_secs(5))));
        }
    };
    // Settled by what the object records of this create (`budget::book::settle`): until
    // it is recorded, the reservation goes back.
    let settle = async |obj: &RentedHost| {
        if reservation.is_some() {
            ctx.budgets.settle(obj, &since.to_string()).await;
        }
    };
    // No resolution of this account runs while the call is in flight: its host would look
    // unclaimed until the answer is written.
    let gate = provider.create_gate();
    let in_flight = gate.read().await;
    // The recording is sent within RECORD_WITHIN of the reservation, so that it has landed
    // long before the budget's sweep settles the reservation by what the object records.
    let Some(left) = RECORD_WITHIN.checked_sub(started.elapsed()) else {
        settle(&obj).await;
        return Ok(Outcome::Done(Action::requeue(Duration::from_secs(1))));
    };
    // The recording and the call (token and rate limit included) end within this budget,
    // whose end is recorded: the resolution's window for a call whose end never was.
    let budget = ctx.config.provider.timeout * 2;
    let deadline = tokio::time::Instant::now() + budget;
    let recorded = decision::creating(&obj, since, now() + budget);
    // The credentials stay while the create needs them (`write_kept`). The guarded write
    // (only while leading) fails if anyone changed the object since the quorum read:
    // createRent is called only after the API server accepted createPending.
    let send_by = Some(tokio::time::Instant::now() + left);
    let obj = match write_kept(ctx, &obj, &recorded, provider.id(), send_by).await {
        Ok(Kept::Written(written)) => *written,
        Ok(Kept::Late) => {
            settle(&obj).await;
            return Ok(Outcome::Done(Action::requeue(Duration::from_secs(1))));
        }
        Ok(Kept::Refused(problem)) => {
            settle(&obj).await;
            let t = decision::credentials_missing(&obj, &problem, now());
            return finish(ctx, &obj, t, "CreateRent").await.map(Outcome::Done);
        }
        // The recording may still land: the budget's sweep settles the reservation once it
        // cannot, by what the object then records.
        Ok(Kept::TooSlow) => return Ok(Outcome::Done(Action::requeue(Duration::from_secs(1)))),
        Err(e @ (Error::Conflict | Error::NotLeading)) => {
            // Not recorded, so not sent.
            settle(&obj).await;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let asked = recorded
        .create_pending
        .as_ref()
        .and_then(|p| p.request.clone())
        .expect("a create records its request");
    let request = CreateRent::of(&asked);
    if !ctx.leadership.is_leading() {
        // Nothing was sent: the recorded create is resolved (and made again) by the leader.
        tracing::warn!("leadership lapsed before createRent; not calling it");
        return Ok(Outcome::Done(Action::requeue(Duration::from_secs(1))));
    }
    let sent = std::sync::OnceLock::new();
    let call = provider.client.create_rent(&request, &sent);
    let answer = tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or_else(|_| match sent.get() {
            // Still waiting for its turn in the rate limit: nothing left this process.
            None => Err(ProviderError::Unsent(
                "the account's rate limit gave createRent no turn within the call's budget".into(),
            )),
            Some(_) => Err(ProviderError::Transport(
                "no answer within the call limit".into(),
            )),
        });
    if let Ok(id) = &answer {
        ctx.ledger.answered(&obj, &since.to_string(), id);
        ctx.siblings.release(&obj);
        tracing::Span::current().record("hostId", id.as_str());
        let total = provider.price(&asked);
        if let Some(total) = total.and_then(|p| p.prepaid_total.parse::<f64>().ok()) {
            ctx.metrics
                .prepaid(&obj.namespace().unwrap_or_default(), total);
        }
    }
    let t = decision::after_create(&obj, &recorded, &answer, now());
    // The host is asked for beside the write of its id (which goes out at once, whatever
    // the answer): the observation that follows needs no listing for it.
    let write = async {
        let written = write_after_create(ctx, obj, &t.status, provider.id()).await;
        // Written (or left to the listing): resolutions and releases may go on.
        drop(in_flight);
        written
    };
    let written = match &answer {
        Ok(id) => {
            provider.rented(id);
            tokio::join!(write, provider.ask_alone(id)).0?
        }
        Err(_) => write.await?,
    };
    // Its host recorded with it (spent), a proven refusal recorded (returned), or an
    // unknown outcome (kept, for the resolution).
    settle(&written).await;
    // A rented host is observed in the same reconcile, on the object just written: its
    // first look's note (running, most often) joins this one in one event.
    let rented = written.status.as_ref().is_some_and(|s| s.host_id.is_some());
    match (&t.note, rented) {
        (Some(note), true) => journal::hold(ctx, &written, note, "CreateRent"),
        (Some(note), false) => journal::tell(ctx, &written, note, "CreateRent").await,
        (None, _) => {}
    }
    Ok(match rented {
        true => Outcome::Replan(Box::new(written)),
        false => Outcome::Done(action(ctx, &written, t.requeue)),
    })
}

/// What reserving a create's prepaid total came to.
enum Reserving {
    /// Held in every budget of the namespace (`None`: it has none).
    Held(Option<Reservation>),
    /// Not sent: no room, or no price to reserve.
    NotSent(Box<Transition>),
    /// The budgets cannot be read: nothing is sent.
    Unreadable(crate::budget::Unreadable),
}

/// Reserves the prepaid total of the host `obj`'s next create asks for in every budget of
/// its namespace, for the create begun at `since`.
async fn reserve(
    obj: &RentedHost,
    provider: &Access,
    ctx: &Context,
    since: Timestamp,
) -> Result<Reserving, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let budgets = match ctx.budgets.of_namespace(&namespace).await {
        Ok(budgets) => budgets,
        Err(e) => return Ok(Reserving::Unreadable(e)),
    };
    if budgets.is_empty() {
        return Ok(Reserving::Held(None));
    }
    let package = decision::next_package(obj).unwrap_or_else(|| obj.spec.package_id.clone());
    let request = CreateRequest::asking(&obj.spec, &package);
    let price = match provider.fresh_price(&request).await {
        Ok(price) => price,
        Err(why) => {
            let t = decision::not_sent(obj, Reason::PriceUnknown, &why, now());
            return Ok(Reserving::NotSent(Box::new(t)));
        }
    };
    let reservation = Reservation {
        object: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        since: since.to_string(),
        amount: price.prepaid_total,
        // Set by each budget to its own.
        window: String::new(),
        // Past any recording sent within RECORD_WITHIN, however long the Secret's read and
        // the write may take.
        expires: (since + SWEEP_AFTER + ctx.guard.create_window() * 2).to_string(),
    };
    Ok(match ctx.budgets.reserve(&budgets, &reservation).await? {
        Reserved::Held => Reserving::Held(Some(reservation)),
        Reserved::Refused(why) => Reserving::NotSent(Box::new(decision::not_sent(
            obj,
            Reason::BudgetExceeded,
            &why,
            now(),
        ))),
    })
}

/// Writes the outcome of a createRent to `obj` as its recording left it, guarded; a
/// conflict (the user annotated the object meanwhile, say) is retried on a fresh read as
/// long as the object still waits for this very create.
pub(super) async fn write_after_create(
    ctx: &Context,
    mut obj: RentedHost,
    status: &RentedHostStatus,
    account: &str,
) -> Result<RentedHost, Error> {
    let pending_since = |o: &RentedHost| {
        let pending = o.status.as_ref()?.create_pending.as_ref()?;
        Some(pending.since.clone())
    };
    let mine = pending_since(&obj);
    let mut delay = Duration::from_millis(100);
    for _ in 0..8 {
        match write_protocol(ctx, &obj, status, account).await {
            Err(Error::Conflict) => {}
            Err(e @ Error::Kube(_)) => {
                tracing::warn!(error = %e, "writing createRent's outcome failed; retrying")
            }
            other => return other,
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        let Some(current) = fresh_opt(ctx, &obj).await? else {
            break;
        };
        if pending_since(&current) != mine
            || current.status.as_ref().is_some_and(|s| s.host_id.is_some())
        {
            break;
        }
        obj = current;
    }
    if let Some(id) = &status.host_id {
        tracing::error!(host = %id, "the rented host could not be recorded on the object; it is resolved from the listing");
    }
    Err(Error::Conflict)
}
