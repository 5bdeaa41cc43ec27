//! Observing a host through the shared listing (confirmed by `one/{id}` when missing), and
//! operating it: connection Secret, power, reboot.

use super::*;

/// The host with this id: `one/{id}` first (one call whatever the account's size), and only
/// when it denies the host a complete, quiet listing that began after the denial. `None` only
/// when `one/{id}` denies it **and** that listing lacks it: a host is never taken as gone
/// from one signal alone.
pub(super) async fn lookup(
    provider: &Access,
    id: &str,
) -> Result<Option<crate::provider::Host>, ProviderError> {
    if let Some(host) = confirm_absent(provider, id).await? {
        return Ok(Some(host));
    }
    let listing = provider.quiet_listing(Instant::now()).await?;
    Ok(listing.get(id).cloned())
}

/// Asks `one/{id}` about a host a complete listing lacks: the host, or `None` when the
/// provider denies it.
pub(super) async fn confirm_absent(
    provider: &Access,
    id: &str,
) -> Result<Option<crate::provider::Host>, ProviderError> {
    match provider.client.host(id).await {
        Ok(Some(host)) => Ok(Some(host)),
        Err(e) if e.denies_host() => Ok(None),
        Ok(None) => Err(ProviderError::Malformed(format!(
            "one/{id} answered success without a host"
        ))),
        Err(e) => Err(e),
    }
}

pub(super) async fn observe_and_operate(
    obj: RentedHost,
    id: &str,
    provider: &Access,
    ctx: &Context,
) -> Result<Action, Error> {
    ctx.accounts.watch(provider, &obj);
    ctx.ledger.recorded(&obj);
    if provider.latest_listing().is_none() {
        // The account's first listing: the poller takes it now, behind every other call of
        // the account.
        ctx.accounts.want_listing();
    }
    // The poller keeps the account's listing as fresh as the account's budget allows: a
    // reconcile reads the newest, whatever its age. A host rented after it began is seen
    // through `one/{id}` (asked once, beside the write of its id); until then the poller
    // lists the account as soon as the budget has room. Not found yet proves nothing (the
    // listing has not had its chance).
    let latest = provider.latest_listing();
    let mut host = match provider.unlisted(id, latest.as_deref()) {
        Unlisted::Older => latest.as_ref().and_then(|l| l.get(id).cloned()),
        Unlisted::Seen(seen) => Some(*seen),
        Unlisted::Unseen { asked } => {
            let found = match asked {
                false => provider.ask_alone(id).await,
                true => None,
            };
            if found.is_none() {
                ctx.accounts.want_listing();
                return Ok(Action::requeue(ctx.config.fast_poll_interval));
            }
            found
        }
    };
    if host.is_none() && latest.is_none() {
        // No listing yet (at start): one is fetched, shared by every reconcile that needs it.
        match provider.listing(Instant::now()).await {
            Ok(listing) => host = listing.get(id).cloned(),
            Err(e) => {
                let t = decision::provider_failed(&obj, &e, now());
                return finish(ctx, &obj, t, "Observe").await;
            }
        }
    }
    if host.is_none() {
        // Missing from a listing that may be old: `one/{id}`, and if it denies the host, a
        // listing begun after that: only both together say it is gone.
        host = match lookup(provider, id).await {
            Ok(found) => found,
            Err(e) => {
                let t = decision::provider_failed(&obj, &e, now());
                return finish(ctx, &obj, t, "Observe").await;
            }
        };
    }
    let unrecorded = obj.status.as_ref().is_some_and(|s| s.account.is_none());
    let obj = match (&host, unrecorded) {
        // Rented before the account was recorded, and now seen in this one: record it,
        // on a quorum read. Until then a missing host is HostNotFound, never released.
        (Some(_), true) => match fresh_opt(ctx, &obj).await? {
            Some(current) if decision::plan(&current) == Step::Observe(id.to_string()) => {
                let mut status = current.status.clone().unwrap_or_default();
                status.account = Some(provider.id().to_string());
                write_protocol(ctx, &current, &status, provider.id()).await?
            }
            _ => return Ok(Action::requeue(Duration::from_secs(1))),
        },
        _ => obj,
    };
    let mut t = decision::after_observe(&obj, id, host.as_ref(), now());
    if let Some(host) = &host {
        let data = decision::connection_data(host);
        let digest = crate::controller::connections::digest(&data);
        let connections = &ctx.connections;
        let at_rest =
            decision::power_action(&obj, host).is_none() && decision::reboot_due(&obj).is_none();
        if at_rest && !connections.current(&obj, digest) {
            // A host seen for the first time (or its login changed), with nothing to do to
            // it: the connection Secret and the status go side by side.
            let name = decision::connection_secret_name(&obj);
            connections.writing(&obj);
            let (written, finished) = tokio::join!(
                writes::apply_connection_secret(&ctx.client, &obj, &name, &data),
                finish(ctx, &obj, t.clone(), "Observe")
            );
            return match written.inspect_err(|_| connections.abandoned(&obj))? {
                writes::ConnectionSecret::Written(version) => {
                    connections.written(&obj, digest, version);
                    finished
                }
                writes::ConnectionSecret::NotOurs => {
                    connections.abandoned(&obj);
                    let t = decision::connection_secret_taken(&obj, t, &name, now());
                    finish(ctx, &obj, t, "Observe").await
                }
            };
        }
        if !connections.current(&obj, digest) {
            let name = decision::connection_secret_name(&obj);
            connections.writing(&obj);
            let written = writes::apply_connection_secret(&ctx.client, &obj, &name, &data).await;
            match written.inspect_err(|_| connections.abandoned(&obj))? {
                writes::ConnectionSecret::Written(version) => {
                    connections.written(&obj, digest, version)
                }
                writes::ConnectionSecret::NotOurs => {
                    connections.abandoned(&obj);
                    t = decision::connection_secret_taken(&obj, t, &name, now());
                }
            }
        }
        if let Some(start) = decision::power_action(&obj, host) {
            let answer = provider.client.operate(id, start).await;
            // What the listing shows of it is stale now: the next look asks for it alone.
            provider.operated(id);
            let op = decision::Operated {
                observed: t,
                answer: &answer,
            };
            t = decision::after_power(&obj, op, start, now());
        } else if let Some(value) = decision::reboot_due(&obj) {
            // Recorded before it is sent, guarded by the version this decision saw: a
            // reconcile on a cache that lags the record conflicts instead of rebooting again.
            let mut record = obj.status.clone().unwrap_or_default();
            record.last_reboot_request = Some(value.clone());
            let recorded = write_protocol(ctx, &obj, &record, provider.id()).await?;
            ctx.reboot_records.shared(&recorded);
            if obj.spec.power_state == crate::api::PowerState::Stopped {
                let t = decision::reboot_dropped(t, &value);
                return finish(ctx, &recorded, t, "Observe").await;
            }
            let answer = provider.client.reboot(id).await;
            provider.operated(id);
            let op = decision::Operated {
                observed: t,
                answer: &answer,
            };
            t = decision::after_reboot(&recorded, op, &value, now());
            if t.status.last_reboot_request.as_deref() != Some(value.as_str()) {
                // To be tried again: the record goes, guarded as it came.
                let undone = write_protocol(ctx, &recorded, &t.status, provider.id()).await?;
                return finish(ctx, &undone, t, "Observe").await;
            }
            return finish(ctx, &recorded, t, "Observe").await;
        }
    }
    finish(ctx, &obj, t, "Observe").await
}
