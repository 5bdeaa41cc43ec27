//! Observing a host through the shared listing (confirmed by `one/{id}` when missing), and
//! operating it: connection Secret, power, reboot.

use super::*;

/// The host with this id, from a complete listing at most `max_age` old (refreshed once
/// if missing). `None` only when the listing lacks it **and** `one/{id}` denies it: a
/// host is never taken as gone from one signal alone.
pub(super) async fn lookup(
    provider: &Access,
    id: &str,
    max_age: Duration,
) -> Result<Option<crate::provider::Host>, ProviderError> {
    let start = Instant::now();
    let listing = provider
        .listing(start.checked_sub(max_age).unwrap_or(start))
        .await?;
    if let Some(host) = listing.get(id) {
        return Ok(Some(host.clone()));
    }
    let listing = if listing.started >= start {
        listing
    } else {
        provider.listing(start).await?
    };
    if let Some(host) = listing.get(id) {
        return Ok(Some(host.clone()));
    }
    confirm_absent(provider, id).await
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
    // The poller keeps the account's listing fresh: a reconcile reads it, and fetches only
    // when there is none recent (concurrent reconciles share that one fetch).
    let not_before = Instant::now().checked_sub(ctx.config.poll_interval * 2);
    let listing = provider
        .listing(not_before.unwrap_or_else(Instant::now))
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
    if host.is_none()
        && ctx
            .ledger
            .learned_at(id)
            .is_some_and(|at| at > listing.started)
    {
        // Rented after this listing was taken: the first look asks for it alone when the
        // rate limit has room for it; otherwise the poller lists the account as soon as it
        // has. Not found yet proves nothing (the listing has not had its chance).
        let found = match provider.client.has_headroom().await && provider.first_look(id) {
            true => provider.client.host(id).await.ok().flatten(),
            false => None,
        };
        match found {
            Some(found) => host = Some(found),
            None => {
                // Once asked alone with success, the host is known: a later reconcile on a
                // lagging cache needs no listing for it.
                if !provider.seen_alone(id) {
                    ctx.accounts.want_listing();
                }
                return Ok(Action::requeue(ctx.config.fast_poll_interval));
            }
        }
        provider.found_alone(id);
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
            provider.invalidate_listing();
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
            provider.invalidate_listing();
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
