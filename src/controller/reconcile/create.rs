//! The create step: record the pending create, call createRent within its deadline, write
//! the answer.

use super::*;

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
    // No resolution of this account runs while the call is in flight: its host would look
    // unclaimed until the answer is written.
    let gate = provider.create_gate();
    let in_flight = gate.read().await;
    // The recording and the call (token and rate limit included) end within this budget,
    // whose end is recorded: the resolution's window for a call whose end never was.
    let budget = ctx.config.provider.timeout * 2;
    let deadline = tokio::time::Instant::now() + budget;
    let recorded = decision::creating(&obj, now(), budget);
    // The credentials stay while the create needs them (`write_kept`). The guarded write
    // (only while leading) fails if anyone changed the object since the quorum read:
    // createRent is called only after the API server accepted createPending.
    let obj = match write_kept(ctx, &obj, &recorded, provider.id()).await? {
        Kept::Written(written) => *written,
        Kept::Refused(problem) => {
            let t = decision::credentials_missing(&obj, &problem, now());
            return finish(ctx, &obj, t, "CreateRent").await.map(Outcome::Done);
        }
        Kept::TooSlow => return Ok(Outcome::Done(Action::requeue(Duration::from_secs(1)))),
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
        let since = recorded.create_pending.as_ref().map(|p| p.since.as_str());
        ctx.ledger.answered(&obj, since.unwrap_or_default(), id);
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
