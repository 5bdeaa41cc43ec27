//! Deletion: resolve a pending create first, release the host (proven), drop the finalizer.

use super::*;
use crate::api::DeletionPolicy;

pub(super) fn needs_provider_to_finalize(obj: &RentedHost, default: DeletionPolicy) -> bool {
    let pending = obj
        .status
        .as_ref()
        .is_some_and(|s| s.create_pending.is_some());
    pending || decision::release_needed(obj, default).is_some()
}

pub(super) async fn finalize(
    mut obj: RentedHost,
    provider: Option<&Access>,
    ctx: &Context,
) -> Result<Action, Error> {
    let default = ctx.config.default_deletion_policy;
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
                    journal::tell(ctx, &written, note, "ResolveCreate").await;
                }
                if t.status.create_pending.is_some() {
                    return Ok(action(ctx, &written, t.requeue));
                }
                // The create is settled; a pause now holds the release too.
                if decision::is_paused(&written) {
                    return pause(ctx, &written).await;
                }
                obj = written;
            }
            Err(e) => {
                let t = decision::provider_failed(&obj, &e, now());
                return finish(ctx, &obj, t, "ResolveCreate").await;
            }
        }
    }
    if provider.is_some() && !ctx.leadership.is_leading() {
        return Err(Error::NotLeading);
    }
    let release = match (decision::release_needed(&obj, default), provider) {
        (Some(id), Some(provider)) => release(provider, &obj, &id).await,
        _ => Release::NotNeeded,
    };
    let (transition, note) = decision::after_release(&obj, &release, now());
    if let Some(note) = &note {
        journal::tell(ctx, &obj, note, "Release").await;
    }
    match transition {
        Some(t) => finish(ctx, &obj, t, "Release").await,
        None => {
            // What the object still holds in its namespace's budgets is settled before it
            // goes (by what it records); the sweep does it should this fail.
            ctx.budgets.settle_object(&obj).await?;
            remove_finalizer(ctx, obj.clone(), default).await?;
            ctx.forget_object(&obj);
            ctx.wake_claimants_of(&obj);
            if let Some(secret) = credentials::secret_ref(&obj, ctx.default_credentials.as_ref()) {
                ctx.guard.released(&secret);
            }
            Ok(Action::await_change())
        }
    }
}

pub(super) async fn release(provider: &Access, obj: &RentedHost, id: &str) -> Release {
    // Releases shift the listing's pages: while this one may take effect no listing proves
    // an absence, and resolutions count the host as claimed.
    let releasing = provider.releasing(id).await;
    let error = match provider.client.delete(id).await {
        Ok(true) => return Release::Released,
        Ok(false) => None,
        Err(e) => Some(e),
    };
    match &error {
        Some(e) if !e.is_proven_refusal() => {
            // The delete may still take effect at the provider until the call's budget
            // is spent: listings wait until then (this release's own proof too).
            let limit = provider.client.call_limit();
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                drop(releasing);
            });
        }
        _ => drop(releasing),
    }
    // "Not deleted" may mean "not there": only `one/{id}` denying the host and a complete
    // listing lacking it, together, prove it gone (a listing alone never does).
    let seen_in_account = obj.status.as_ref().is_some_and(|s| s.account.is_some());
    match lookup(provider, id).await {
        Ok(None) if seen_in_account => Release::Released,
        Ok(None) => Release::Unproven {
            account: provider.id().to_string(),
        },
        Ok(Some(_)) => Release::Failed(error),
        Err(e) => Release::Failed(Some(error.unwrap_or(e))),
    }
}

/// Removes the finalizer once deletion is done with the host. A conflict (the garbage
/// collector adding its own finalizer to a pool's child, say) is retried on a quorum read
/// that still calls for the same release: the host is not released (or looked for) again.
async fn remove_finalizer(
    ctx: &Context,
    mut obj: RentedHost,
    default: DeletionPolicy,
) -> Result<(), Error> {
    let released = decision::release_needed(&obj, default);
    for _ in 0..5 {
        match writes::remove_finalizer(&ctx.client, &obj).await {
            Err(Error::Conflict) => match fresh_opt(ctx, &obj).await? {
                Some(current)
                    if current.uid() == obj.uid()
                        && current.metadata.deletion_timestamp.is_some()
                        && current
                            .status
                            .as_ref()
                            .is_none_or(|s| s.create_pending.is_none())
                        && decision::release_needed(&current, default) == released =>
                {
                    obj = current
                }
                Some(_) => return Err(Error::Conflict),
                None => return Ok(()),
            },
            other => return other,
        }
    }
    Err(Error::Conflict)
}
