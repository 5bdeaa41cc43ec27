//! The I/O around the decision: read what a step needs from the provider and the API
//! server, hand it to `decision`, and write back what it decided.

use super::decision::{self, Release, Requeue, Step, Transition};
use super::ledger::object_key;
use super::reason::Reason;
use super::resolution::{self, Expected, PendingCreate, Resolution, Window};
use super::{Context, Error, credentials, credentials_in_use, journal, writes};
use crate::account::{Access, Listing, RELEASES_REMEMBERED, Unlisted};
use crate::api::{CREATE_NOT_RENTED_ANNOTATION, RentedHost, RentedHostStatus};
use crate::provider::{CreateRent, ProviderError};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

mod create;
mod finalize;
mod observe;
mod resolve;

use create::create;
use finalize::{finalize, needs_provider_to_finalize};
use observe::{lookup, observe_and_operate};
use resolve::{adopt, resolve_and_write, resolve_pending};

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
    // Every line logged while reconciling carries the object; `hostId` once it is known.
    let host_id = obj.status.as_ref().and_then(|s| s.host_id.as_deref());
    let span = tracing::info_span!(
        "reconcile",
        namespace = %obj.namespace().unwrap_or_default(),
        name = %obj.name_any(),
        hostId = host_id.or(obj.spec.host_id.as_deref()),
    );
    let uid = obj.uid().unwrap_or_default();
    let steps_ctx = ctx.clone();
    let steps = async move {
        let ctx = steps_ctx;
        // From the cache at first; then each write's answer, or a quorum read.
        let mut obj = Read::Cached((*obj).clone());
        // Adding the finalizer changes the object, a quorum read may show a newer one than
        // the cache, and a rented host is observed at once: plan again on the result (a few
        // times at most).
        for _ in 0..4 {
            match decision::plan(obj.object()) {
                Step::AddFinalizer => {
                    let written = writes::add_finalizer(&ctx.client, obj.object()).await?;
                    obj = Read::Current(written);
                }
                Step::WaitForSpecChange | Step::Finalized => return Ok(Action::await_change()),
                Step::Paused => return pause(&ctx, obj.object()).await,
                step => match perform(step, obj, &ctx).await? {
                    Outcome::Done(action) => return Ok(action),
                    Outcome::Replan(current) => obj = Read::Current(*current),
                },
            }
        }
        Ok(Action::requeue(Duration::from_secs(1)))
    };
    let result = steps.instrument(span).await;
    // What a step held back for the next goes out whatever became of the next.
    journal::publish_held(&ctx, &uid).await;
    result
}

pub fn error_policy(obj: Arc<RentedHost>, error: &Error, ctx: Arc<Context>) -> Action {
    let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let host_id = obj.status.as_ref().and_then(|s| s.host_id.as_deref());
    let reason = error.reason();
    match error {
        // Routine: a write raced another, or another replica leads.
        Error::Conflict | Error::NotLeading => {
            tracing::debug!(namespace, name, hostId = host_id, reason, %error, "reconcile ended early; retrying");
            let wait = match error {
                Error::Conflict => Duration::from_millis(200),
                _ => Duration::from_secs(5),
            };
            Action::requeue(wait)
        }
        Error::Kube(_) | Error::BudgetUnsettled => {
            let retry = Reason::ProviderUnavailable;
            let attempt = ctx.holds.next_attempt(&obj, retry);
            // The first failure, then the 2nd, 3rd, 5th, 9th…: a lasting one stays in sight
            // without a line per retry.
            let attempts = attempt + 1;
            if attempt == 0 || attempt.is_power_of_two() {
                tracing::error!(namespace, name, hostId = host_id, reason, attempts, %error, "cannot reach or write to the Kubernetes API; retrying");
            } else {
                tracing::debug!(namespace, name, hostId = host_id, reason, attempts, %error, "cannot reach or write to the Kubernetes API; retrying");
            }
            retry_after(&ctx, &obj, retry, attempt)
        }
    }
}

/// Poll intervals between two reconciles of an object whose host is at rest.
const RESYNC_POLLS: u32 = 10;

/// Failed releases in a row (about five minutes of retries) before the log says ERROR.
const RELEASE_ATTEMPTS_BEFORE_ALARM: u32 = 5;

fn now() -> Timestamp {
    Timestamp::now()
}

fn jitter() -> f64 {
    rand::random_range(0.0..1.0)
}

/// Retry number `attempt` for `reason`, per the retry table.
fn retry_after(ctx: &Context, obj: &RentedHost, reason: Reason, attempt: u32) -> Action {
    match reason.retry().delay(attempt, jitter()) {
        Some(delay) => {
            let delay = delay.mul_f64(ctx.config.retry_scale);
            if reason.holds_retries() {
                ctx.holds.hold_creates(obj, Instant::now() + delay);
            }
            // A refused create (the object has no host), not a refused power operation.
            let renting = obj.status.as_ref().is_none_or(|s| s.host_id.is_none());
            if reason.holds_siblings() && renting {
                ctx.siblings.hold(obj, Instant::now() + delay);
            }
            Action::requeue(delay)
        }
        None => Action::await_change(),
    }
}

fn action(ctx: &Context, obj: &RentedHost, requeue: Requeue) -> Action {
    match requeue {
        Requeue::Retry(reason) => {
            let attempt = ctx.holds.next_attempt(obj, reason);
            if reason == Reason::ReleaseFailed && attempt == RELEASE_ATTEMPTS_BEFORE_ALARM {
                // The reconcile span names the object and its host.
                tracing::error!(
                    reason = reason.as_str(),
                    attempts = attempt,
                    "the host still bills: its release keeps failing (see the object's events)"
                );
            }
            retry_after(ctx, obj, reason, attempt)
        }
        Requeue::Observe { transitional } => {
            ctx.holds.reset(obj);
            // A host at rest is looked at again when the poller sees it change; this is
            // only a resync, and N idle objects must not cost N reconciles a poll.
            let interval = if transitional {
                ctx.config.fast_poll_interval
            } else {
                ctx.config.poll_interval * RESYNC_POLLS
            };
            Action::requeue(interval.mul_f64(0.9 + 0.2 * jitter()))
        }
        Requeue::After(delay) => {
            ctx.holds.reset(obj);
            Action::requeue(delay)
        }
    }
}

/// A paused object: `Synced=False` (reason `Paused`) and nothing else, no provider call,
/// and no observation until the annotation goes (its change triggers a reconcile).
async fn pause(ctx: &Context, obj: &RentedHost) -> Result<Action, Error> {
    ctx.accounts.unwatch(obj);
    // No provider call, but the credentials a release will need stay (a Kubernetes write):
    // a namespace deleted while the object is paused must not take them.
    let secret = credentials::secret_ref(obj, ctx.default_credentials.as_ref());
    if let Some(secret) = &secret
        && credentials_in_use::needs_credentials(obj)
    {
        ctx.guard.protect(&ctx.client, secret).await?;
    }
    apply_observation(ctx, obj, &decision::paused(obj, now())).await?;
    Ok(Action::await_change())
}

/// Makes the protocol's manager an owner of `obj`'s reboot record, once per object and
/// process (see `writes::share_reboot_record`).
async fn share_reboot_record(ctx: &Context, obj: &RentedHost) -> Result<(), Error> {
    if ctx.reboot_records.need_sharing(obj) {
        writes::share_reboot_record(&ctx.client, obj).await?;
        ctx.reboot_records.shared(obj);
    }
    Ok(())
}

/// Applies the observation part of a status (see `writes::apply_status`), once the
/// protocol's manager shares the object's reboot record: an older operator's status
/// manager owned it alone, and an apply that leaves it out would remove it.
async fn apply_observation(
    ctx: &Context,
    obj: &RentedHost,
    status: &RentedHostStatus,
) -> Result<RentedHost, Error> {
    share_reboot_record(ctx, obj).await?;
    writes::apply_status(&ctx.client, obj, status).await
}

/// What every observation write shows beside the decision's status: the deletion policy in
/// effect and, once the account's package list has been read, the price.
fn with_policy_and_price(
    ctx: &Context,
    obj: &RentedHost,
    mut status: RentedHostStatus,
) -> RentedHostStatus {
    status.deletion_policy = Some(
        obj.spec
            .deletion_policy_or(ctx.config.default_deletion_policy),
    );
    // The package rented, or the one the next create asks for.
    let package = status.package_id.as_deref().unwrap_or(&obj.spec.package_id);
    let request = crate::api::CreateRequest::asking(&obj.spec, package);
    if let Some(account) = status.account.as_deref()
        && let Some(price) = ctx.accounts.price(account, &request)
    {
        status.price = Some(price);
    }
    status
}

/// Writes a transition's status (when changed), publishes its note, and says when to come back.
async fn finish(
    ctx: &Context,
    obj: &RentedHost,
    t: Transition,
    verb: &str,
) -> Result<Action, Error> {
    let status = with_policy_and_price(ctx, obj, t.status);
    if ctx.recent.just_written(obj, &status) {
        // The cache lags behind this very status, written (and told) a moment ago.
        return Ok(action(ctx, obj, t.requeue));
    }
    let written = apply_observation(ctx, obj, &status).await?;
    ctx.recent.wrote(obj, &written, &status);
    if decision::first_ready(obj.status.as_ref(), &status)
        && let Some(created) = obj.metadata.creation_timestamp.as_ref()
    {
        let took = now().duration_since(created.0);
        ctx.metrics
            .time_to_ready
            .observe(took.as_secs_f64().max(0.0));
    }
    if let Some(note) = &t.note {
        journal::tell(ctx, &written, note, verb).await;
    }
    Ok(action(ctx, &written, t.requeue))
}

async fn provider_for(obj: &RentedHost, ctx: &Context) -> Result<Access, credentials::Problem> {
    let Some(secret) = credentials::secret_ref(obj, ctx.default_credentials.as_ref()) else {
        return Err(credentials::Problem::Missing("no credentials: set spec.credentialsSecretRef, or start the operator with a default credentials Secret".into()));
    };
    let creds = ctx.credentials.get(&ctx.client, &secret).await?;
    Ok(ctx.accounts.access(creds))
}

/// An object as the reconcile has it: from the cache (perhaps stale), or current (a quorum
/// read, or the answer of a write, which is the object as stored).
enum Read {
    Cached(RentedHost),
    Current(RentedHost),
}

impl Read {
    fn object(&self) -> &RentedHost {
        match self {
            Read::Cached(obj) | Read::Current(obj) => obj,
        }
    }
}

/// What a step came to: done, or an object (current) that needs another step.
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

async fn perform(step: Step, read: Read, ctx: &Context) -> Result<Outcome, Error> {
    let (obj, current) = match read {
        Read::Cached(obj) => (obj, false),
        Read::Current(obj) => (obj, true),
    };
    if step == Step::Finalize
        && !needs_provider_to_finalize(&obj, ctx.config.default_deletion_policy)
    {
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
    // Every step that can spend money or change the protocol fields acts on a current
    // object: a quorum read, unless a write of this reconcile just answered with it.
    let obj = match &step {
        _ if current => obj,
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
    // Whatever must settle or release through the credentials keeps them (a create reads
    // its Secret itself, in `create`).
    let secret = credentials::secret_ref(&obj, ctx.default_credentials.as_ref());
    if let Some(secret) = &secret
        && step != Step::Create
        && credentials_in_use::needs_credentials(&obj)
    {
        ctx.guard.protect(&ctx.client, secret).await?;
    }
    let unpriced = obj.status.as_ref().is_none_or(|s| s.price.is_none());
    if matches!(step, Step::Create) || (unpriced && matches!(step, Step::Observe(_))) {
        provider.refresh_prices().await;
    }
    let action = match step {
        Step::Create => return create(obj, &provider, ctx).await,
        Step::ResolvePending => resolve_pending(obj, &provider, ctx).await?,
        Step::Observe(id) => observe_and_operate(obj, &id, &provider, ctx).await?,
        Step::Adopt(id) => adopt(obj, &id, &provider, ctx).await?,
        Step::Finalize => finalize(obj, Some(&provider), ctx).await?,
        Step::AddFinalizer | Step::WaitForSpecChange | Step::Paused | Step::Finalized => {
            unreachable!("handled by reconcile")
        }
    };
    Ok(Outcome::Done(action))
}

/// The refusal of credentials that name another account than the host's (or the pending
/// create's).
fn wrong_account(obj: &RentedHost, provider: &Access) -> Option<Transition> {
    let status = obj.status.as_ref()?;
    let owner = status.account.as_deref()?;
    let owned = status.host_id.is_some() || status.create_pending.is_some();
    (owned && owner != provider.id())
        .then(|| decision::account_changed(obj, owner, provider.id(), now()))
}

/// What a protocol write that makes an object need its credentials came to.
enum Kept {
    /// Written, the credentials kept for it.
    Written(Box<RentedHost>),
    /// Not written: the credentials Secret is being deleted, or gone (the problem to show).
    Refused(String),
    /// Not known: the read and the write did not end within the guard's window. Nothing
    /// may be sent on it; a write that lands late is resolved as any other.
    TooSlow,
    /// Not written: the Secret's lock was not had by the time the write had to be sent.
    Late,
}

/// Writes `status` (its protocol fields, as [`write_protocol`]), which makes `obj` need its
/// credentials Secret (a pending create, a host to release), only while the Secret is kept:
/// read now (protected if it was not) and the write made within the guard's window of that
/// read (see `credentials_in_use`). Other writes go through as they are.
async fn write_kept(
    ctx: &Context,
    obj: &RentedHost,
    status: &RentedHostStatus,
    account: &str,
    send_by: Option<tokio::time::Instant>,
) -> Result<Kept, Error> {
    let mut after = obj.clone();
    after.status = Some(status.clone());
    let secret = credentials::secret_ref(obj, ctx.default_credentials.as_ref());
    let secret = secret.filter(|_| credentials_in_use::needs_credentials(&after));
    let Some(secret) = secret else {
        let written = write_protocol(ctx, obj, status, account).await?;
        return Ok(Kept::Written(Box::new(written)));
    };
    // The finalizer stays from the read to the write (its removal waits for the lock).
    let creating = match send_by {
        Some(by) => match tokio::time::timeout_at(by, ctx.guard.creating(&secret)).await {
            Ok(creating) => creating,
            Err(_) => return Ok(Kept::Late),
        },
        None => ctx.guard.creating(&secret).await,
    };
    let window = ctx.guard.create_window();
    let kept = tokio::time::timeout(window, async {
        let standing = ctx.guard.for_create(&ctx.client, &secret).await?;
        if standing != credentials_in_use::Standing::Protected {
            return Ok(Kept::Refused(format!(
                "credentials Secret {}/{} is being deleted: no host is rented or adopted with it",
                secret.namespace, secret.name
            )));
        }
        let written = write_protocol(ctx, obj, status, account).await?;
        Ok(Kept::Written(Box::new(written)))
    })
    .await;
    match kept {
        Ok(kept) => kept,
        Err(_) => {
            tracing::warn!(window = ?window, "reading the credentials and writing the object took too long; nothing is sent on it");
            // The write may still land: the finalizer stays for one more window.
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                drop(creating);
            });
            Ok(Kept::TooSlow)
        }
    }
}

/// A quorum read: decisions that could spend money are never made on a cached object.
async fn fresh_opt(ctx: &Context, obj: &RentedHost) -> Result<Option<RentedHost>, Error> {
    let api: Api<RentedHost> = crate::kit::beside(&ctx.client, obj);
    api.get_opt(&obj.name_any()).await.map_err(Error::from_kube)
}

/// Every RentedHost the operator manages, by a quorum list (not the cache).
async fn quorum_list(ctx: &Context) -> Result<Vec<RentedHost>, Error> {
    let api: Api<RentedHost> = crate::kit::scoped(&ctx.client, ctx.config.namespace.as_deref());
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(Error::from_kube)?;
    Ok(list.items)
}

/// A write of the protocol fields: only while this replica leads, and naming the account
/// the host or the pending create belongs to.
async fn write_protocol(
    ctx: &Context,
    obj: &RentedHost,
    status: &RentedHostStatus,
    account: &str,
) -> Result<RentedHost, Error> {
    if !ctx.leadership.is_leading() {
        return Err(Error::NotLeading);
    }
    // The write may end with an apply of the observation part (see `apply_observation`).
    share_reboot_record(ctx, obj).await?;
    let mut status = status.clone();
    let owned = status.host_id.is_some() || status.create_pending.is_some();
    // An account once recorded stays (`wrong_account` refuses credentials of another). A
    // host an older operator rented without recording one gets it only once it is seen
    // there (`observe_and_operate`): today's credentials may name another account.
    let before = obj.status.as_ref();
    let recorded = before.and_then(|s| s.account.clone());
    let unseen = before.is_some_and(|s| s.host_id.is_some()) && recorded.is_none();
    status.account = match (owned, recorded) {
        (false, _) => None,
        (true, Some(recorded)) => Some(recorded),
        (true, None) if unseen => status.account.clone(),
        (true, None) => Some(account.to_string()),
    };
    writes::write_protocol(&ctx.client, obj, &status).await
}
