//! The I/O around the decision: read what a step needs from the provider and the API
//! server, hand it to `decision`, and write back what it decided.

use super::decision::{self, Release, Requeue, Step, Transition};
use super::reason::Reason;
use super::resolution::{self, PendingCreate, Resolution, Window};
use super::{Context, Error, credentials, object_key, writes};
use crate::api::{CREATE_NOT_RENTED_ANNOTATION, RentedHost, RentedHostStatus};
use crate::provider::{CreateRent, ProviderClient, ProviderError};
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

pub async fn reconcile(obj: Arc<RentedHost>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_traced(obj, ctx.clone()).await;
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    };
    ctx.metrics.reconciled(label, started.elapsed());
    result
}

async fn reconcile_traced(obj: Arc<RentedHost>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
    async move {
        let mut obj = (*obj).clone();
        // Adding the finalizer changes the object, and a quorum read may show a newer one
        // than the cache: plan again on the result (a few times at most).
        for _ in 0..4 {
            match decision::plan(&obj) {
                Step::AddFinalizer => obj = writes::add_finalizer(&ctx.client, &obj).await?,
                Step::WaitForSpecChange => return Ok(Action::await_change()),
                step => match perform(step, obj, &ctx).await? {
                    Outcome::Done(action) => return Ok(action),
                    Outcome::Replan(fresh) => obj = *fresh,
                },
            }
        }
        Ok(Action::requeue(Duration::from_secs(1)))
    }
    .instrument(span)
    .await
}

pub fn error_policy(obj: Arc<RentedHost>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %obj.name_any(), reason = error.reason(), %error, "reconcile failed");
    match error {
        Error::Conflict => Action::requeue(Duration::from_millis(200)),
        Error::Kube(_) => action(&ctx, &obj, Requeue::Retry(Reason::ProviderUnavailable)),
        Error::NotLeading => Action::requeue(Duration::from_secs(5)),
    }
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn jitter() -> f64 {
    rand::random_range(0.0..1.0)
}

fn action(ctx: &Context, obj: &RentedHost, requeue: Requeue) -> Action {
    match requeue {
        Requeue::Retry(reason) => {
            let attempt = ctx.next_attempt(obj, reason);
            match reason.retry().delay(attempt, jitter()) {
                Some(delay) => {
                    let delay = delay.mul_f64(ctx.config.retry_scale);
                    if reason.holds_retries() {
                        ctx.hold_creates(obj, Instant::now() + delay);
                    }
                    Action::requeue(delay)
                }
                None => Action::await_change(),
            }
        }
        Requeue::Observe { transitional } => {
            ctx.reset_attempts(obj);
            let interval = if transitional {
                ctx.config.fast_poll_interval
            } else {
                ctx.config.poll_interval
            };
            Action::requeue(interval.mul_f64(0.9 + 0.2 * jitter()))
        }
        Requeue::After(delay) => {
            ctx.reset_attempts(obj);
            Action::requeue(delay)
        }
    }
}

/// Writes a transition's status (when changed), publishes its note, and says when to come back.
async fn finish(
    ctx: &Context,
    obj: &RentedHost,
    t: Transition,
    verb: &str,
) -> Result<Action, Error> {
    let written = writes::apply_status(&ctx.client, obj, &t.status).await?;
    if let Some(note) = &t.note {
        writes::publish(&ctx.recorder, &written, note, verb).await;
    }
    Ok(action(ctx, &written, t.requeue))
}

async fn provider_for(
    obj: &RentedHost,
    ctx: &Context,
) -> Result<Arc<ProviderClient>, credentials::Problem> {
    let Some(secret) = credentials::secret_ref(obj, ctx.config.default_credentials.as_ref()) else {
        return Err(credentials::Problem::Missing("no credentials: set spec.credentialsSecretRef, or start the operator with a default credentials Secret".into()));
    };
    let creds = ctx.credentials(&secret).await?;
    Ok(ctx
        .providers
        .get(&ctx.config.provider, creds, Some(ctx.observer.clone())))
}

/// What a step came to: done, or the quorum read showed an object that needs another step.
enum Outcome {
    Done(Action),
    Replan(Box<RentedHost>),
}

/// The fresh object, if it still calls for `step`; otherwise the object to plan again on.
async fn still(
    ctx: &Context,
    obj: &RentedHost,
    step: &Step,
) -> Result<Result<RentedHost, Outcome>, Error> {
    match fresh_opt(ctx, obj).await? {
        Some(current) if decision::plan(&current) == *step => Ok(Ok(current)),
        Some(current) => Ok(Err(Outcome::Replan(Box::new(current)))),
        None => Ok(Err(Outcome::Done(Action::await_change()))),
    }
}

async fn perform(step: Step, obj: RentedHost, ctx: &Context) -> Result<Outcome, Error> {
    if step == Step::Finalize && !needs_provider_to_finalize(&obj) {
        return finalize(obj, None, ctx).await.map(Outcome::Done);
    }
    let provider = match provider_for(&obj, ctx).await {
        Ok(p) => p,
        Err(credentials::Problem::Unreadable(e)) => return Err(Error::from_kube(e)),
        Err(credentials::Problem::Missing(problem)) => {
            let t = decision::credentials_missing(&obj, &problem, now());
            return finish(ctx, &obj, t, "LoadCredentials")
                .await
                .map(Outcome::Done);
        }
    };
    if let Some(t) = wrong_account(&obj, &provider) {
        return finish(ctx, &obj, t, "LoadCredentials")
            .await
            .map(Outcome::Done);
    }
    // Every step that can spend money or change the protocol fields acts on a quorum read.
    let obj = match &step {
        Step::Observe(_) => obj,
        _ => match still(ctx, &obj, &step).await? {
            Ok(current) => current,
            Err(outcome) => return Ok(outcome),
        },
    };
    if let Some(t) = wrong_account(&obj, &provider) {
        return finish(ctx, &obj, t, "LoadCredentials")
            .await
            .map(Outcome::Done);
    }
    let action = match step {
        Step::Create => create(obj, &provider, ctx).await?,
        Step::ResolvePending => resolve_pending(obj, &provider, ctx).await?,
        Step::Observe(id) => observe_and_operate(obj, &id, &provider, ctx).await?,
        Step::Adopt(id) => adopt(obj, &id, &provider, ctx).await?,
        Step::Finalize => finalize(obj, Some(&provider), ctx).await?,
        Step::AddFinalizer | Step::WaitForSpecChange => unreachable!("handled by reconcile"),
    };
    Ok(Outcome::Done(action))
}

/// The refusal of credentials that name another account than the host's (or the pending
/// create's).
fn wrong_account(obj: &RentedHost, provider: &ProviderClient) -> Option<Transition> {
    let status = obj.status.as_ref()?;
    let owner = status.account.as_deref()?;
    let owned = status.host_id.is_some() || status.create_pending.is_some();
    (owned && owner != provider.account())
        .then(|| decision::account_changed(obj, owner, provider.account(), now()))
}

/// A quorum read: decisions that could spend money are never made on a cached object.
async fn fresh_opt(ctx: &Context, obj: &RentedHost) -> Result<Option<RentedHost>, Error> {
    let api: Api<RentedHost> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    api.get_opt(&obj.name_any()).await.map_err(Error::from_kube)
}

/// Every RentedHost the operator manages, by a quorum list (not the cache).
async fn quorum_list(ctx: &Context) -> Result<Vec<RentedHost>, Error> {
    let api: Api<RentedHost> = match &ctx.config.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(Error::from_kube)?;
    Ok(list.items)
}

/// Host ids claimed by objects other than `me`: by their status or spec (quorum list), or
/// learned by this process and not yet written.
fn claimed_ids(ctx: &Context, all: &[RentedHost], me: &RentedHost) -> HashSet<String> {
    let key = object_key(me);
    let mut ids: HashSet<String> = all
        .iter()
        .filter(|o| object_key(o) != key)
        .flat_map(|o| {
            [
                o.status.as_ref().and_then(|s| s.host_id.clone()),
                o.spec.host_id.clone(),
            ]
        })
        .flatten()
        .filter(|id| !id.trim().is_empty())
        .collect();
    ids.extend(ctx.claims_of_others(me));
    ids
}

/// A write of the protocol fields: only while this replica leads, and naming the account
/// the host or the pending create belongs to.
async fn write_protocol(
    ctx: &Context,
    obj: &RentedHost,
    status: &RentedHostStatus,
    account: &str,
) -> Result<RentedHost, Error> {
    if !ctx.config.leadership.is_leading() {
        return Err(Error::NotLeading);
    }
    let mut status = status.clone();
    let owned = status.host_id.is_some() || status.create_pending.is_some();
    // An account once recorded stays (`wrong_account` refuses credentials of another).
    let recorded = obj.status.as_ref().and_then(|s| s.account.clone());
    status.account = owned.then(|| recorded.unwrap_or_else(|| account.to_string()));
    writes::write_protocol(&ctx.client, obj, &status).await
}

async fn create(
    obj: RentedHost,
    provider: &ProviderClient,
    ctx: &Context,
) -> Result<Action, Error> {
    if let Some(left) = ctx.create_held_for(&obj) {
        return Ok(Action::requeue(left));
    }
    // No resolution of this account runs while the call is in flight: its host would look
    // unclaimed until the answer is written.
    let gate = ctx.hosts.create_gate(provider);
    let _in_flight = gate.read().await;
    if !ctx.config.leadership.is_leading() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // The guarded write fails if anyone (another replica, an older view) changed the object:
    // createRent is called only after the API server has accepted createPending.
    // The recording and the call (token and rate limit included) end within this budget,
    // whose end is recorded: the resolution's window for a call whose end never was.
    let budget = ctx.config.provider.timeout * 2;
    let deadline = tokio::time::Instant::now() + budget;
    let recorded = decision::creating(&obj, now(), budget);
    let obj = write_protocol(ctx, &obj, &recorded, provider.account()).await?;
    let spec = &obj.spec;
    let request = CreateRent {
        package_id: spec.package_id.clone(),
        image_id: spec.image_id.clone(),
        period_number: spec.period.count,
        period_type: spec.period.unit.period_type(),
    };
    if !ctx.config.leadership.is_leading() {
        // Nothing was sent: the recorded create is resolved (and made again) by the leader.
        tracing::warn!("leadership lapsed before createRent; not calling it");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let answer = tokio::time::timeout_at(deadline, provider.create_rent(&request))
        .await
        .unwrap_or_else(|_| {
            Err(ProviderError::Transport(
                "no answer within the call limit".into(),
            ))
        });
    if let Ok(id) = &answer {
        let since = recorded.create_pending.as_ref().map(|p| p.since.as_str());
        ctx.answered(&obj, since.unwrap_or_default(), id);
        tracing::info!(host = %id, "rented host");
    }
    let t = decision::after_create(&obj, &recorded, &answer, now());
    let written = write_after_create(ctx, obj, &recorded, &t.status, provider.account()).await?;
    if let Some(note) = &t.note {
        writes::publish(&ctx.recorder, &written, note, "CreateRent").await;
    }
    Ok(action(ctx, &written, t.requeue))
}

/// Writes the outcome of a createRent, guarded; a conflict (the user annotated the object
/// meanwhile, say) is retried on a fresh read as long as the object still waits for this
/// very create.
async fn write_after_create(
    ctx: &Context,
    mut obj: RentedHost,
    recorded: &RentedHostStatus,
    status: &RentedHostStatus,
    account: &str,
) -> Result<RentedHost, Error> {
    let mine = recorded.create_pending.as_ref().map(|p| &p.since);
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
        let waiting = current
            .status
            .as_ref()
            .and_then(|s| s.create_pending.as_ref())
            .map(|p| &p.since);
        if waiting != mine || current.status.as_ref().is_some_and(|s| s.host_id.is_some()) {
            break;
        }
        obj = current;
    }
    if let Some(id) = &status.host_id {
        tracing::error!(host = %id, "the rented host could not be recorded on the object; it is resolved from the listing");
    }
    Err(Error::Conflict)
}

fn pending_create(obj: &RentedHost) -> Option<PendingCreate> {
    let pending = obj.status.as_ref()?.create_pending.as_ref()?;
    let parse = |s: &str| s.parse::<Timestamp>().ok();
    // Without a readable time, every host since the object's creation is a candidate.
    let since = parse(&pending.since)
        .or_else(|| obj.meta().creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    Some(PendingCreate {
        key: object_key(obj),
        since,
        call_ended: pending.call_ended.as_deref().and_then(parse),
        deadline: pending.deadline.as_deref().and_then(parse),
        request: pending
            .request
            .clone()
            .unwrap_or_else(|| crate::api::CreateRequest::of(&obj.spec)),
    })
}

/// Resolves the pending create of `obj` (a quorum read) and writes the result, guarded,
/// while holding the account's resolver lock. Returns the object as written.
async fn resolve_and_write(
    obj: &RentedHost,
    provider: &ProviderClient,
    ctx: &Context,
) -> Result<Result<(RentedHost, Transition), ProviderError>, Error> {
    let Some(me) = pending_create(obj) else {
        return Ok(Ok((
            obj.clone(),
            decision::after_resolution(obj, &Resolution::NoHost, now(), Duration::ZERO, now()),
        )));
    };
    // One resolver per account, and none while a create of the account is in flight.
    let gate = ctx.hosts.create_gate(provider);
    let _exclusive = gate.write().await;
    let listing = match ctx.hosts.listing(provider, Instant::now()).await {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    let expected = match ctx.hosts.expected(provider, &me.request).await {
        Ok(x) => x,
        Err(e) => return Ok(Err(e)),
    };
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
    let me = pending_create(&obj).unwrap_or(me);
    let claimed = claimed_ids(ctx, &all, &obj);
    let mut others = Vec::new();
    for o in all.iter().filter(|o| object_key(o) != me.key) {
        let Some(p) = pending_create(o) else { continue };
        if same_account(ctx, o, provider).await {
            let catalogued = match ctx.hosts.expected(provider, &p.request).await {
                Ok(x) => x,
                Err(e) => return Ok(Err(e)),
            };
            others.push((p, catalogued));
        }
    }
    let others: Vec<resolution::Other<'_>> = others
        .iter()
        .map(|(p, c)| (p.clone(), c.as_ref()))
        .collect();
    let window = Window {
        skew: ctx.config.clock_skew,
        // The budget of a create (`create`), for one recorded without its deadline.
        call_limit: ctx.config.provider.timeout * 2,
    };
    // createRent answered this process with a host for this object, but the answer could
    // not be written: that host is the object's, whatever pairing would say.
    let answered = ctx.answer_for(&obj);
    let decide = |hosts: &[crate::provider::Host]| {
        let found = match &answered {
            Some(id) => Resolution::Adopt(id.clone()),
            None => resolution::resolve(
                &me,
                &others,
                hosts,
                &claimed,
                expected.as_ref(),
                window,
                now(),
            ),
        };
        let waited_from = me.call_end(window);
        decision::after_resolution(&obj, &found, waited_from, ctx.config.create_grace, now())
    };
    let mut t = decide(&listing.hosts);
    if t.status.host_id.is_none() && t.status.create_pending.is_none() {
        // About to create again: a listing read while hosts were released or expired may
        // have skipped one as the pages shifted. Only a second complete listing, started
        // after the first, that agrees allows it.
        match ctx.hosts.listing(provider, Instant::now()).await {
            Ok(again) => t = decide(&again.hosts),
            Err(e) => return Ok(Err(e)),
        }
    }
    let paired = t.status.host_id.clone().filter(|_| answered.is_none());
    if let Some(id) = &paired {
        ctx.claim(&obj, id);
    }
    match write_protocol(ctx, &obj, &t.status, provider.account()).await {
        Ok(written) => Ok(Ok((written, t))),
        Err(e) => {
            // The pairing is made again next time, perhaps differently.
            if let Some(id) = &paired {
                ctx.release_claim(id);
            }
            Err(e)
        }
    }
}

/// Whether `obj` rents on the same account as `provider`: by the account its status
/// records, else by its credentials.
async fn same_account(ctx: &Context, obj: &RentedHost, provider: &ProviderClient) -> bool {
    if let Some(account) = obj.status.as_ref().and_then(|s| s.account.as_deref()) {
        return account == provider.account();
    }
    let Some(secret) = credentials::secret_ref(obj, ctx.config.default_credentials.as_ref()) else {
        return false;
    };
    ctx.credentials(&secret)
        .await
        .is_ok_and(|c| c.uuid == provider.account())
}

async fn resolve_pending(
    obj: RentedHost,
    provider: &ProviderClient,
    ctx: &Context,
) -> Result<Action, Error> {
    match resolve_and_write(&obj, provider, ctx).await? {
        Ok((written, t)) => {
            if t.status.create_pending.is_none() && decision::create_not_rented_allowed(&obj) {
                writes::remove_annotation(&ctx.client, &written, CREATE_NOT_RENTED_ANNOTATION)
                    .await?;
            }
            if let Some(note) = &t.note {
                writes::publish(&ctx.recorder, &written, note, "ResolveCreate").await;
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
async fn adopt(
    obj: RentedHost,
    id: &str,
    provider: &Arc<ProviderClient>,
    ctx: &Context,
) -> Result<Action, Error> {
    // Not while a create of the account is in flight: its host is not claimed yet.
    let gate = ctx.hosts.create_gate(provider);
    let _exclusive = gate.write().await;
    let all = quorum_list(ctx).await?;
    let key = object_key(&obj);
    let other = all
        .iter()
        .filter(|o| object_key(o) != key)
        .find(|o| {
            o.status.as_ref().and_then(|s| s.host_id.as_deref()) == Some(id)
                || o.spec.host_id.as_deref() == Some(id)
        })
        .map(object_key)
        .or_else(|| ctx.claimed_by_other(&obj, id));
    let host = match other {
        Some(_) => None,
        None => match lookup(provider, ctx, id, Duration::ZERO).await {
            Ok(host) => host,
            Err(e) => {
                let t = decision::provider_failed(&obj, &e, now());
                return finish(ctx, &obj, t, "Adopt").await;
            }
        },
    };
    let t = decision::after_adopt(&obj, id, host.as_ref(), other.as_deref(), now());
    let written = if t.status.host_id.is_some() {
        ctx.claim(&obj, id);
        ctx.poller.register(provider, &obj);
        match write_protocol(ctx, &obj, &t.status, provider.account()).await {
            Ok(written) => written,
            Err(e) => {
                ctx.release_claim(id);
                return Err(e);
            }
        }
    } else {
        writes::apply_status(&ctx.client, &obj, &t.status).await?
    };
    if let Some(note) = &t.note {
        writes::publish(&ctx.recorder, &written, note, "Adopt").await;
    }
    Ok(action(ctx, &written, t.requeue))
}

/// The host with this id, from a complete listing at most `max_age` old (refreshed once
/// if missing). `None` only when the listing lacks it **and** `one/{id}` denies it: a
/// host is never taken as gone from one signal alone.
async fn lookup(
    provider: &ProviderClient,
    ctx: &Context,
    id: &str,
    max_age: Duration,
) -> Result<Option<crate::provider::Host>, ProviderError> {
    let start = Instant::now();
    let listing = ctx
        .hosts
        .listing(provider, start.checked_sub(max_age).unwrap_or(start))
        .await?;
    if let Some(host) = listing.get(id) {
        return Ok(Some(host.clone()));
    }
    let listing = if listing.started >= start {
        listing
    } else {
        ctx.hosts.listing(provider, start).await?
    };
    if let Some(host) = listing.get(id) {
        return Ok(Some(host.clone()));
    }
    confirm_absent(provider, id).await
}

/// Asks `one/{id}` about a host a complete listing lacks: the host, or `None` when the
/// provider denies it.
async fn confirm_absent(
    provider: &ProviderClient,
    id: &str,
) -> Result<Option<crate::provider::Host>, ProviderError> {
    match provider.host(id).await {
        Ok(Some(host)) => Ok(Some(host)),
        Err(e) if e.denies_host() => Ok(None),
        Ok(None) => Err(ProviderError::Malformed(format!(
            "one/{id} answered success without a host"
        ))),
        Err(e) => Err(e),
    }
}

async fn observe_and_operate(
    obj: RentedHost,
    id: &str,
    provider: &Arc<ProviderClient>,
    ctx: &Context,
) -> Result<Action, Error> {
    ctx.poller.register(provider, &obj);
    let obj = match obj.status.as_ref().is_some_and(|s| s.account.is_none()) {
        // Rented before the account was recorded: record it, on a quorum read.
        true => match fresh_opt(ctx, &obj).await? {
            Some(current) if decision::plan(&current) == Step::Observe(id.to_string()) => {
                let status = current.status.clone().unwrap_or_default();
                write_protocol(ctx, &current, &status, provider.account()).await?
            }
            _ => return Ok(Action::requeue(Duration::from_secs(1))),
        },
        false => obj,
    };
    // The poller keeps the account's listing fresh: a reconcile reads it, and fetches only
    // when there is none recent (concurrent reconciles share that one fetch).
    let not_before = Instant::now().checked_sub(ctx.config.poll_interval * 2);
    let listing = ctx
        .hosts
        .listing(provider, not_before.unwrap_or_else(Instant::now))
        .await;
    let listing = match listing {
        Ok(listing) => listing,
        Err(e) => {
            return finish(
                ctx,
                &obj,
                decision::provider_failed(&obj, &e, now()),
                "Observe",
            )
            .await;
        }
    };
    let mut host = listing.get(id).cloned();
    if host.is_none() && ctx.learned_at(id).is_some_and(|at| at > listing.started) {
        // Rented after this listing was taken: the next (fast) poll shows it.
        return Ok(Action::requeue(ctx.config.fast_poll_interval));
    }
    if host.is_none() {
        host = match confirm_absent(provider, id).await {
            Ok(found) => found,
            Err(e) => {
                let t = decision::provider_failed(&obj, &e, now());
                return finish(ctx, &obj, t, "Observe").await;
            }
        };
    }
    let mut t = decision::after_observe(&obj, id, host.as_ref(), now());
    if let Some(host) = &host {
        let data = decision::connection_data(host);
        let digest = super::poller::digest(&data);
        if !ctx.poller.connection_current(&obj, digest) {
            let name = decision::connection_secret_name(&obj);
            match writes::apply_connection_secret(&ctx.client, &obj, &name, &data).await? {
                writes::ConnectionSecret::Written => ctx.poller.connection_written(&obj, digest),
                writes::ConnectionSecret::NotOurs => {
                    t = decision::connection_secret_taken(&obj, t, &name, now());
                }
            }
        }
        if let Some(start) = decision::power_action(&obj, host) {
            let answer = provider.operate(id, start).await;
            ctx.hosts.invalidate(provider).await;
            t = decision::after_power(&obj, t, start, &answer, now());
        } else if let Some(value) = decision::reboot_due(&obj) {
            let answer = provider.reboot(id).await;
            ctx.hosts.invalidate(provider).await;
            t = decision::after_reboot(&obj, t, &value, &answer, now());
        }
    }
    finish(ctx, &obj, t, "Observe").await
}

fn needs_provider_to_finalize(obj: &RentedHost) -> bool {
    let pending = obj
        .status
        .as_ref()
        .is_some_and(|s| s.create_pending.is_some());
    pending || decision::release_needed(obj).is_some()
}

async fn finalize(
    mut obj: RentedHost,
    provider: Option<&Arc<ProviderClient>>,
    ctx: &Context,
) -> Result<Action, Error> {
    let pending = obj
        .status
        .as_ref()
        .is_some_and(|s| s.create_pending.is_some());
    let answer = obj.spec.host_id.clone().filter(|id| !id.trim().is_empty());
    if let (Some(provider), true, Some(id)) = (provider, pending, &answer) {
        // The user answered an ambiguous create with spec.hostId: adopt it, then release it.
        return adopt(obj.clone(), id, provider, ctx).await;
    }
    if let Some(provider) = provider
        && pending
    {
        // A deletion during a pending create resolves the create first: adopt, then release.
        match resolve_and_write(&obj, provider, ctx).await? {
            Ok((written, t)) => {
                if let Some(note) = &t.note {
                    writes::publish(&ctx.recorder, &written, note, "ResolveCreate").await;
                }
                if t.status.create_pending.is_some() {
                    return Ok(action(ctx, &written, t.requeue));
                }
                obj = written;
            }
            Err(e) => {
                let t = decision::provider_failed(&obj, &e, now());
                return finish(ctx, &obj, t, "ResolveCreate").await;
            }
        }
    }
    if provider.is_some() && !ctx.config.leadership.is_leading() {
        return Err(Error::NotLeading);
    }
    let release = match (decision::release_needed(&obj), provider) {
        (Some(id), Some(provider)) => release(provider, ctx, &id).await,
        _ => Release::NotNeeded,
    };
    let (transition, note) = decision::after_release(&obj, &release, now());
    match transition {
        Some(t) => {
            if let Some(note) = &note {
                writes::publish(&ctx.recorder, &obj, note, "Release").await;
            }
            finish(ctx, &obj, t, "Release").await
        }
        None => {
            if let Some(note) = &note {
                writes::publish(&ctx.recorder, &obj, note, "Release").await;
            }
            writes::remove_finalizer(&ctx.client, &obj).await?;
            ctx.poller.forget(&obj);
            ctx.forget_object(&obj);
            ctx.reset_attempts(&obj);
            Ok(Action::await_change())
        }
    }
}

async fn release(provider: &ProviderClient, ctx: &Context, id: &str) -> Release {
    // Releases shift the listing's pages: neither a resolution nor another release's proof
    // of absence reads it meanwhile.
    let gate = ctx.hosts.create_gate(provider);
    let _releasing = gate.write().await;
    let error = match provider.delete(id).await {
        Ok(true) => return Release::Released,
        Ok(false) => None,
        Err(e) => Some(e),
    };
    // "Not deleted" may mean "not there": only `one/{id}` denying the host and a complete
    // listing lacking it, together, prove it gone (a listing alone never does).
    match lookup(provider, ctx, id, Duration::ZERO).await {
        Ok(None) => Release::Released,
        Ok(Some(_)) => Release::Failed(error),
        Err(e) => Release::Failed(Some(error.unwrap_or(e))),
    }
}
