//! The I/O around the decision: read what a step needs from the provider and the API
//! server, hand it to `decision`, and write back what it decided.

use super::decision::{self, Release, Requeue, Step, Transition};
use super::reason::Reason;
use super::{Context, Error, credentials, writes};
use crate::api::{CREATE_NOT_RENTED_ANNOTATION, RentedHost};
use crate::provider::{CreateRent, ProviderClient, ProviderError};
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
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
        // Adding the finalizer changes the object; plan again on the result.
        loop {
            match decision::plan(&obj) {
                Step::AddFinalizer => obj = writes::add_finalizer(&ctx.client, &obj).await?,
                Step::WaitForSpecChange => return Ok(Action::await_change()),
                step => return perform(step, obj, &ctx).await,
            }
        }
    }
    .instrument(span)
    .await
}

pub fn error_policy(obj: Arc<RentedHost>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %obj.name_any(), reason = error.reason(), %error, "reconcile failed");
    match error {
        Error::Conflict => Action::requeue(Duration::from_millis(200)),
        Error::Kube(_) => action(&ctx, &obj, Requeue::Retry(Reason::ProviderUnavailable)),
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
            let attempt = ctx.next_attempt(obj);
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
    let written = writes::apply_status(&ctx.client, obj, &t.status, false).await?;
    if let Some(note) = &t.note {
        writes::publish(&ctx.recorder, &written, note, verb).await;
    }
    Ok(action(ctx, &written, t.requeue))
}

async fn provider_for(obj: &RentedHost, ctx: &Context) -> Result<Arc<ProviderClient>, String> {
    let Some(secret) = credentials::secret_ref(obj, ctx.config.default_credentials.as_ref()) else {
        return Err("no credentials: set spec.credentialsSecretRef, or start the operator with a default credentials Secret".into());
    };
    let creds = ctx.credentials(&secret).await?;
    Ok(ctx
        .providers
        .get(&ctx.config.provider, creds, Some(ctx.observer.clone())))
}

async fn perform(step: Step, obj: RentedHost, ctx: &Context) -> Result<Action, Error> {
    if step == Step::Finalize && !needs_provider_to_finalize(&obj) {
        return finalize(obj, None, ctx).await;
    }
    let provider = match provider_for(&obj, ctx).await {
        Ok(p) => p,
        Err(problem) => {
            return finish(
                ctx,
                &obj,
                decision::credentials_missing(&obj, &problem, now()),
                "LoadCredentials",
            )
            .await;
        }
    };
    match step {
        Step::Create => create(obj, &provider, ctx).await,
        Step::ResolvePending => {
            let fresh = fresh(ctx, &obj).await?;
            if decision::plan(&fresh) != Step::ResolvePending {
                return Ok(Action::requeue(Duration::ZERO));
            }
            match resolve_pending(&fresh, &provider, ctx).await {
                Ok(t) => settle_resolution(ctx, &fresh, t).await,
                Err(e) => {
                    finish(
                        ctx,
                        &fresh,
                        decision::provider_failed(&fresh, &e, now()),
                        "ResolveCreate",
                    )
                    .await
                }
            }
        }
        Step::Observe(id) => observe_and_operate(obj, &id, &provider, ctx).await,
        Step::Adopt(id) => {
            let other = ctx.claimed_by_other(&obj, &id);
            let result = match other {
                Some(_) => Ok(None),
                None => lookup(&provider, ctx, &id, Duration::ZERO).await,
            };
            match result {
                Ok(host) => {
                    let t =
                        decision::after_adopt(&obj, &id, host.as_ref(), other.as_deref(), now());
                    if t.status.host_id.is_some() {
                        ctx.claim(&obj, &id);
                        ctx.poller.register(&provider, &obj);
                    }
                    finish(ctx, &obj, t, "Adopt").await
                }
                Err(e) => {
                    finish(
                        ctx,
                        &obj,
                        decision::provider_failed(&obj, &e, now()),
                        "Adopt",
                    )
                    .await
                }
            }
        }
        Step::Finalize => {
            // A release is a provider call: make it only for an object that still exists
            // as the API server has it now (a queued trigger may outlive the object).
            match fresh_opt(ctx, &obj).await? {
                Some(current) if decision::plan(&current) == Step::Finalize => {
                    finalize(current, Some(&provider), ctx).await
                }
                _ => Ok(Action::await_change()),
            }
        }
        Step::AddFinalizer | Step::WaitForSpecChange => unreachable!("handled by reconcile"),
    }
}

/// A quorum read: decisions that could spend money are never made on a cached object.
async fn fresh_opt(ctx: &Context, obj: &RentedHost) -> Result<Option<RentedHost>, Error> {
    let api: Api<RentedHost> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    api.get_opt(&obj.name_any()).await.map_err(Error::from_kube)
}

async fn fresh(ctx: &Context, obj: &RentedHost) -> Result<RentedHost, Error> {
    let api: Api<RentedHost> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    api.get(&obj.name_any()).await.map_err(Error::from_kube)
}

async fn create(
    obj: RentedHost,
    provider: &ProviderClient,
    ctx: &Context,
) -> Result<Action, Error> {
    if let Some(left) = ctx.create_held_for(&obj) {
        return Ok(Action::requeue(left));
    }
    let obj = fresh(ctx, &obj).await?;
    if decision::plan(&obj) != Step::Create {
        return Ok(Action::requeue(Duration::ZERO));
    }
    // The guarded write fails if anyone (another replica, an older view) changed the object:
    // createRent is called only after the API server has accepted createPending.
    let recorded = decision::creating(&obj, now());
    let obj = writes::apply_status(&ctx.client, &obj, &recorded, true).await?;
    let spec = &obj.spec;
    let request = CreateRent {
        package_id: spec.package_id.clone(),
        image_id: spec.image_id.clone(),
        period_number: spec.period.count,
        period_type: spec.period.unit.period_type(),
    };
    let answer = provider.create_rent(&request).await;
    if let Ok(id) = &answer {
        ctx.claim(&obj, id);
        tracing::info!(host = %id, "rented host");
    }
    let t = decision::after_create(&obj, &recorded, &answer, now());
    let written = writes::apply_status_retrying(&ctx.client, &obj, &t.status).await?;
    if let Some(note) = &t.note {
        writes::publish(&ctx.recorder, &written, note, "CreateRent").await;
    }
    Ok(action(ctx, &written, t.requeue))
}

fn pending_since(obj: &RentedHost) -> Timestamp {
    let recorded = obj
        .status
        .as_ref()
        .and_then(|s| s.create_pending.as_ref())
        .and_then(|p| p.since.parse::<Timestamp>().ok());
    // Without a readable time, every host since the object's creation is a candidate.
    recorded
        .or_else(|| obj.meta().creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

async fn resolve_pending(
    obj: &RentedHost,
    provider: &ProviderClient,
    ctx: &Context,
) -> Result<Transition, ProviderError> {
    let listing = ctx.hosts.listing(provider, Instant::now()).await?;
    let package = ctx.hosts.package(provider, &obj.spec.package_id).await?;
    let claimed = ctx.claimed_ids(obj);
    let since = pending_since(obj);
    let found = decision::candidates(
        &listing.hosts,
        since,
        ctx.config.clock_skew,
        &claimed,
        package.as_ref(),
    );
    Ok(decision::after_resolution(
        obj,
        &found,
        since,
        ctx.config.create_grace,
        now(),
    ))
}

async fn settle_resolution(
    ctx: &Context,
    obj: &RentedHost,
    t: Transition,
) -> Result<Action, Error> {
    if let Some(id) = &t.status.host_id {
        ctx.claim(obj, id);
    }
    let cleared = t.status.create_pending.is_none();
    if cleared && decision::create_not_rented_allowed(obj) {
        writes::remove_annotation(&ctx.client, obj, CREATE_NOT_RENTED_ANNOTATION).await?;
    }
    finish(ctx, obj, t, "ResolveCreate").await
}

/// The host with this id, from a listing at most `max_age` old (refreshed once if missing).
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
    if listing.started >= start {
        return Ok(None);
    }
    Ok(ctx.hosts.listing(provider, start).await?.get(id).cloned())
}

async fn observe_and_operate(
    obj: RentedHost,
    id: &str,
    provider: &Arc<ProviderClient>,
    ctx: &Context,
) -> Result<Action, Error> {
    ctx.poller.register(provider, &obj);
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
    let host = listing.get(id).cloned();
    if host.is_none() && ctx.learned_at(id).is_some_and(|at| at > listing.started) {
        // Rented after this listing was taken: the next (fast) poll shows it.
        return Ok(Action::requeue(ctx.config.fast_poll_interval));
    }
    let mut t = decision::after_observe(&obj, id, host.as_ref(), now());
    if let Some(host) = &host {
        let data = decision::connection_data(host);
        let digest = super::poller::digest(&data);
        if !ctx.poller.connection_current(&obj, digest) {
            writes::apply_connection_secret(
                &ctx.client,
                &obj,
                &decision::connection_secret_name(&obj),
                &data,
            )
            .await?;
            ctx.poller.connection_written(&obj, digest);
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
    provider: Option<&ProviderClient>,
    ctx: &Context,
) -> Result<Action, Error> {
    if let Some(provider) = provider
        && obj
            .status
            .as_ref()
            .is_some_and(|s| s.create_pending.is_some())
    {
        // A deletion during a pending create resolves the create first: adopt, then release.
        let t = match resolve_pending(&obj, provider, ctx).await {
            Ok(t) => t,
            Err(e) => {
                return finish(
                    ctx,
                    &obj,
                    decision::provider_failed(&obj, &e, now()),
                    "ResolveCreate",
                )
                .await;
            }
        };
        if t.status.create_pending.is_some() {
            return finish(ctx, &obj, t, "ResolveCreate").await;
        }
        obj = writes::apply_status(&ctx.client, &obj, &t.status, false).await?;
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
            if let Some(id) = obj.status.as_ref().and_then(|s| s.host_id.as_deref()) {
                ctx.release_claim(id);
            }
            ctx.reset_attempts(&obj);
            Ok(Action::await_change())
        }
    }
}

async fn release(provider: &ProviderClient, ctx: &Context, id: &str) -> Release {
    let error = match provider.delete(id).await {
        Ok(true) => return Release::Released,
        Ok(false) => None,
        Err(e) => Some(e),
    };
    // "Not deleted" may mean "not there": only a fresh listing without it proves it gone.
    match ctx.hosts.listing(provider, Instant::now()).await {
        Ok(listing) if listing.get(id).is_none() => Release::Released,
        Ok(_) => Release::Failed(error),
        Err(e) => Release::Failed(Some(error.unwrap_or(e))),
    }
}
