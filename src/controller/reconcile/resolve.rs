//! Settling pending creates whose answer was lost (behind the account's create gate, on a
//! complete listing and a quorum list), and adopting `spec.hostId`.

use super::*;

/// The object that holds host `id` against `me`'s `spec.hostId`: one that has it (its
/// status, or this process learned it for it), or one that asks for it too and came
/// first (older, then by name), so that of two objects naming one host exactly one wins.
fn holder(ctx: &Context, all: &[RentedHost], me: &RentedHost, id: &str) -> Option<String> {
    let learned = ctx.ledger.claims_of_others(me).into_iter();
    if let Some((_, owner)) = learned.into_iter().find(|(claimed, _)| claimed == id) {
        return Some(owner);
    }
    let key = object_key(me);
    let first = |o: &RentedHost| {
        let at = |o: &RentedHost| o.metadata.creation_timestamp.clone().map(|t| t.0);
        (at(o), object_key(o)) < (at(me), key.clone())
    };
    all.iter()
        .filter(|o| object_key(o) != key)
        .find(|o| {
            let has = o.status.as_ref().and_then(|s| s.host_id.as_deref()) == Some(id);
            let asks = o.spec.host_id.as_deref() == Some(id);
            has || (asks && first(o))
        })
        .map(object_key)
}

/// The host ids an object claims: its status's and its spec's.
fn claimed_ids(obj: &RentedHost) -> impl Iterator<Item = String> {
    let ids = [
        obj.status.as_ref().and_then(|s| s.host_id.clone()),
        obj.spec.host_id.clone(),
    ];
    ids.into_iter().flatten().filter(|id| !id.trim().is_empty())
}

/// The claims a pending create must leave out: hosts some object manages (`claimed`: its
/// status or spec, or learned by this process for it), and hosts only observe-only objects
/// claim (`observed`, which a person places).
fn claims_for_resolution(
    ctx: &Context,
    all: &[RentedHost],
    me: &RentedHost,
) -> (HashSet<String>, HashSet<String>) {
    let key = object_key(me);
    let observers: HashSet<String> = all
        .iter()
        .filter(|o| o.spec.observe_only())
        .map(object_key)
        .collect();
    let mut claimed: HashSet<String> = ctx
        .ledger
        .claims_of_others(me)
        .into_iter()
        .filter(|(_, owner)| !observers.contains(owner))
        .map(|(id, _)| id)
        .collect();
    let mut observed = HashSet::new();
    for o in all.iter().filter(|o| object_key(o) != key) {
        match o.spec.observe_only() {
            true => observed.extend(claimed_ids(o)),
            false => claimed.extend(claimed_ids(o)),
        }
    }
    // A host one object manages and another observes is managed.
    observed.retain(|id| !claimed.contains(id));
    (claimed, observed)
}

/// Resolves the pending create of `obj` (a quorum read) and writes the result, guarded.
/// Returns the object as written.
///
/// The account is listed without the create gate, so creates go on meanwhile; the gate is
/// held only while the claims are read and the answer written. Every host a listing shows
/// was created before the listing read it, so by the time the gate is ours its create has
/// answered: its host id is written (a claim), its answer is lost (another pending create,
/// paired alongside), or its object was released since (remembered by the account).
pub(super) async fn resolve_and_write(
    obj: &RentedHost,
    provider: &Access,
    ctx: &Context,
) -> Result<Result<(RentedHost, Transition), ProviderError>, Error> {
    let Some(me) = PendingCreate::of(obj) else {
        // Callers come here only for a pending create: plan again on what changed.
        return Err(Error::Conflict);
    };
    let window = Window {
        skew: ctx.config.clock_skew,
        // The budget of a create (`create`), for one recorded without its deadline.
        call_limit: ctx.config.provider.timeout * 2,
    };
    let expected = match provider.expected(&me.request).await {
        Ok(x) => x,
        Err(e) => return Ok(Err(e)),
    };
    // Quiet listings only: one read while a release of ours shifted its pages may lack a
    // host, and pairing on it may give one create's host to another.
    let due = listing_due(&me, window, ctx.config.create_grace);
    let mut listing = match provider.quiet_listing(due).await {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    // When the listing that last found nothing ended: creating again takes a second one,
    // begun after it, that agrees (one read while hosts expired may have skipped one as
    // the pages shifted).
    let mut absent_after: Option<Instant> = None;
    loop {
        if listing.started.elapsed() >= RELEASES_REMEMBERED / 2 {
            // Too old to tell surely which of its hosts were released since: list again.
            listing = match provider.quiet_listing(Instant::now()).await {
                Ok(l) => l,
                Err(e) => return Ok(Err(e)),
            };
            continue;
        }
        let gate = provider.create_gate();
        let exclusive = gate.write().await;
        let decided = match decide_on(&listing, &me, &expected, window, provider, ctx).await? {
            Ok(decided) => decided,
            Err(e) => return Ok(Err(e)),
        };
        let Decided { obj, t, answered } = decided;
        let creates_again = t.status.host_id.is_none() && t.status.create_pending.is_none();
        let agreed = absent_after.is_some_and(|after| listing.started >= after);
        if creates_again && !agreed {
            drop(exclusive);
            absent_after = Some(listing.finished);
            listing = match provider.quiet_listing(listing.finished).await {
                Ok(l) => l,
                Err(e) => return Ok(Err(e)),
            };
            continue;
        }
        let paired = t.status.host_id.clone().filter(|_| answered.is_none());
        if let Some(id) = &paired {
            ctx.ledger.claim(&obj, id);
        }
        // The span began without a host id (a pending create has none): it has one now.
        // Once, since a field recorded twice is logged twice.
        if let Some(id) = &t.status.host_id {
            tracing::Span::current().record("hostId", id.as_str());
        }
        let since = pending_since(&obj);
        // A person's word that nothing was rented does not return money: the create's
        // reservation is spent (a host of it may bill unclaimed), before the object stops
        // recording the create (the sweep would return it after).
        let by_word = creates_again && decision::create_not_rented_allowed(&obj);
        if by_word
            && let Some(since) = &since
            && !ctx.budgets.spend(&obj, since).await
        {
            // Tried again (with a backoff) before the create is given up.
            return Err(Error::BudgetUnsettled);
        }
        return match write_protocol(ctx, &obj, &t.status, provider.id()).await {
            Ok(written) => {
                if let Some(since) = &since {
                    ctx.budgets.settle(&written, since).await;
                }
                Ok(Ok((written, t)))
            }
            Err(e) => {
                // The pairing is made again next time, perhaps differently.
                if let Some(id) = &paired {
                    ctx.ledger.release_claim(id);
                }
                Err(e)
            }
        };
    }
}

/// The `since` of the create `obj` waits for, if any: its budgets' reservations name it.
fn pending_since(obj: &RentedHost) -> Option<String> {
    let pending = obj.status.as_ref()?.create_pending.as_ref()?;
    Some(pending.since.clone())
}

/// When the listing a resolution reads must have begun: after the create's grace period
/// once it is over (such a listing proves the host absent), else after the call ended
/// (such a listing shows the host if the provider lists it yet). Pending creates whose
/// calls ended together share one listing.
fn listing_due(me: &PendingCreate, window: Window, grace: Duration) -> Instant {
    let (wall, instant) = (now(), Instant::now());
    let ended = me.call_end(window);
    let due = match ended + grace {
        over if over <= wall => over,
        _ => ended,
    };
    let ago = Duration::try_from(wall.duration_since(due)).unwrap_or(Duration::ZERO);
    instant.checked_sub(ago).unwrap_or(instant)
}

/// The wall-clock time of `at`, a moment of this process's past.
fn wall_of(at: Instant) -> Timestamp {
    now() - at.elapsed()
}

/// A resolution's answer for the object as a quorum read shows it.
struct Decided {
    obj: RentedHost,
    t: Transition,
    /// The host createRent answered this process for the object (not written then).
    answered: Option<String>,
}

/// Decides a pending create on `listing`, with the claims of a quorum read and the hosts
/// released since the listing began. The caller holds the create gate.
async fn decide_on(
    listing: &Listing,
    me: &PendingCreate,
    expected: &crate::account::Catalogued,
    window: Window,
    provider: &Access,
    ctx: &Context,
) -> Result<Result<Decided, ProviderError>, Error> {
    let all = quorum_list(ctx).await?;
    let Some(obj) = all.iter().find(|o| object_key(o) == me.key).cloned() else {
        // Gone meanwhile (it cannot be, with its finalizer): look again.
        return Err(Error::Conflict);
    };
    if obj
        .spec
        .host_id
        .as_deref()
        .is_some_and(|id| !id.trim().is_empty())
    {
        // The user answered meanwhile: plan again, to adopt their host.
        return Err(Error::Conflict);
    }
    if wrong_account(&obj, provider).is_some() {
        // Planned again, the object reports the credentials' account.
        return Err(Error::Conflict);
    }
    let Some(me) = PendingCreate::of(&obj) else {
        // Settled meanwhile (another replica's resolution): plan again.
        return Err(Error::Conflict);
    };
    let (mut claimed, observed) = claims_for_resolution(ctx, &all, &obj);
    // A host we released may still be listed, its object gone: it was that object's, so
    // it is no pending create's. Read after the quorum list: an object that list lacks had
    // begun its release before.
    claimed.extend(provider.released());
    let mut others = Vec::new();
    for o in all.iter().filter(|o| object_key(o) != me.key) {
        let Some(p) = PendingCreate::of(o) else {
            continue;
        };
        if same_account(ctx, o, provider).await {
            let catalogued = match provider.expected(&p.request).await {
                Ok(x) => x,
                Err(e) => return Ok(Err(e)),
            };
            others.push((p, catalogued));
        }
    }
    let others: Vec<resolution::Other<'_>> = others
        .iter()
        .map(|(p, c)| (p.clone(), Expected::of(c)))
        .collect();
    // createRent answered this process with a host for this object, but the answer could
    // not be written: that host is the object's, whatever pairing would say.
    let answered = ctx.ledger.answer_for(&obj);
    let found = match &answered {
        Some(id) => Resolution::Adopt(id.clone()),
        None => {
            let account = resolution::Account {
                others: &others,
                hosts: &listing.hosts,
                claimed: &claimed,
                observed: &observed,
                window,
                now: now(),
                pairing: ctx.config.sees_every_claim() && !provider.someone_else_rents(),
            };
            resolution::resolve(&me, Expected::of(expected), account)
        }
    };
    let grace = decision::Grace {
        from: me.call_end(window),
        length: ctx.config.create_grace,
        listed: wall_of(listing.started),
    };
    let t = decision::after_resolution(&obj, &found, grace, now());
    Ok(Ok(Decided { obj, t, answered }))
}

/// Whether `obj` rents on the same account as `provider`: by the account its status
/// records, else by its credentials.
pub(super) async fn same_account(ctx: &Context, obj: &RentedHost, provider: &Access) -> bool {
    if let Some(account) = obj.status.as_ref().and_then(|s| s.account.as_deref()) {
        return account == provider.id();
    }
    let Some(secret) = credentials::secret_ref(obj, ctx.default_credentials.as_ref()) else {
        return false;
    };
    ctx.credentials
        .get(&ctx.client, &secret)
        .await
        .is_ok_and(|c| c.uuid == provider.id())
}

pub(super) async fn resolve_pending(
    obj: RentedHost,
    provider: &Access,
    ctx: &Context,
) -> Result<Action, Error> {
    match resolve_and_write(&obj, provider, ctx).await? {
        Ok((written, t)) => {
            if t.status.create_pending.is_none() && decision::create_not_rented_allowed(&obj) {
                writes::remove_annotation(&ctx.client, &written, CREATE_NOT_RENTED_ANNOTATION)
                    .await?;
            }
            if let Some(note) = &t.note {
                journal::tell(ctx, &written, note, "ResolveCreate").await;
            }
            Ok(action(ctx, &written, t.requeue))
        }
        Err(e) => {
            finish(
                ctx,
                &obj,
                decision::provider_failed(&obj, &e, now()),
                "ResolveCreate",
            )
            .await
        }
    }
}

/// Adopts `spec.hostId`: claims read by quorum, the host looked up at the provider, the
/// host id written guarded.
pub(super) async fn adopt(
    obj: RentedHost,
    id: &str,
    provider: &Access,
    ctx: &Context,
) -> Result<Action, Error> {
    // Looked up first: a listing it may take is read without the gate.
    let looked = Instant::now();
    let host = match lookup(provider, id).await {
        Ok(host) => host,
        Err(e) => {
            let t = decision::provider_failed(&obj, &e, now());
            return finish(ctx, &obj, t, "Adopt").await;
        }
    };
    // Not while a create of the account is in flight: its host is not claimed yet.
    let gate = provider.create_gate();
    let _exclusive = gate.write().await;
    let all = quorum_list(ctx).await?;
    let released = provider.released_since(looked);
    if released.is_none_or(|ids| ids.contains(id)) {
        // Its holder let it go since it was looked up: look again.
        return Err(Error::Conflict);
    }
    let other = holder(ctx, &all, &obj, id);
    let found = match (&other, &host) {
        (Some(other), _) => decision::Adoptable::ClaimedBy(other),
        (None, None) => decision::Adoptable::NotInAccount,
        (None, Some(host)) => decision::Adoptable::Yes(host),
    };
    let t = decision::after_adopt(&obj, id, found, now());
    let written = if t.status.host_id.is_some() {
        ctx.ledger.claim(&obj, id);
        ctx.accounts.watch(provider, &obj);
        // A host to release: adopted only while its credentials are kept (`write_kept`).
        match write_kept(ctx, &obj, &t.status, provider.id(), None).await {
            Ok(Kept::Written(written)) => {
                // The user's answer to a pending create: that create rented this host
                // (`rentedSince`), and spends what it held.
                if let Some(since) = pending_since(&obj) {
                    ctx.budgets.settle(&written, &since).await;
                }
                *written
            }
            Ok(Kept::Refused(problem)) => {
                ctx.ledger.release_claim(id);
                ctx.accounts.unwatch(&obj);
                let t = decision::credentials_missing(&obj, &problem, now());
                return finish(ctx, &obj, t, "Adopt").await;
            }
            Ok(Kept::TooSlow | Kept::Late) => {
                ctx.ledger.release_claim(id);
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            Err(e) => {
                ctx.ledger.release_claim(id);
                return Err(e);
            }
        }
    } else {
        apply_observation(ctx, &obj, &t.status).await?
    };
    if let Some(note) = &t.note {
        journal::tell(ctx, &written, note, "Adopt").await;
    }
    Ok(action(ctx, &written, t.requeue))
}
