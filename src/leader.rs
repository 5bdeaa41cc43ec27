//! Leader election on a `coordination.k8s.io` Lease, so that of several replicas exactly one
//! reconciles (and so creates) at a time. The lease is renewed at a third of its duration,
//! released on shutdown, and a replica that cannot renew stops reconciling.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, PostParams};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    pub duration: Duration,
}

/// Resolves when the holder must stop: shutdown requested or leadership lost.
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// How an elected run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Stopped before or after leading, as asked.
    Stopped,
    /// The lease could not be renewed: another replica may lead now.
    LostLease,
}

struct LeaseLock {
    api: Api<Lease>,
    config: LeaseConfig,
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let duration = spec.lease_duration_seconds.unwrap_or(15).max(1);
    renewed + jiff::SignedDuration::from_secs(i64::from(duration)) < now
}

impl LeaseLock {
    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let ours = previous.and_then(|p| p.holder_identity.as_deref())
            == Some(self.config.identity.as_str());
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.duration.as_secs().max(1) as i32),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..Default::default()
        }
    }

    /// Takes or renews the lease if it is free, expired or ours; false if another holds it.
    async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        match self.api.get_opt(&self.config.name).await? {
            None => {
                let mut lease = Lease::default();
                lease.metadata.name = Some(self.config.name.clone());
                lease.spec = Some(self.spec(None, now));
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.as_deref().unwrap_or_default();
                if holder != self.config.identity && !holder.is_empty() && !expired(&spec, now) {
                    return Ok(false);
                }
                lease.spec = Some(self.spec(Some(&spec), now));
                // The replace carries the resourceVersion read above: of two contenders, one wins.
                match self
                    .api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        lease.spec = Some(spec);
        if let Err(error) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(%error, "could not release the lease");
        }
    }
}

/// Waits to lead, then runs `work` until it ends, `stop` completes, or the lease is lost;
/// `work` gets a [`Shutdown`] to finish gracefully. The lease is released at the end.
pub async fn run_elected<W, F>(
    client: Client,
    config: LeaseConfig,
    stop: impl Future<Output = ()>,
    work: W,
) -> Ended
where
    W: FnOnce(Shutdown) -> F,
    F: Future<Output = ()>,
{
    let lock = LeaseLock {
        api: Api::namespaced(client, &config.namespace),
        config,
    };
    let retry = lock.config.duration / 4;
    tokio::pin!(stop);
    loop {
        match lock.try_hold().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "leader election: cannot read the lease"),
        }
        tokio::select! {
            _ = &mut stop => return Ended::Stopped,
            _ = tokio::time::sleep(retry) => {}
        }
    }
    tracing::info!(lease = %lock.config.name, identity = %lock.config.identity, "leading");
    let (tell, listen) = watch::channel(false);
    let renewals = async {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(lock.config.duration / 3).await;
            match lock.try_hold().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, "leader election: renewal failed");
                    if last_renewal.elapsed() > lock.config.duration * 2 / 3 {
                        return;
                    }
                }
            }
        }
    };
    let worker = work(Shutdown(listen));
    tokio::pin!(worker);
    let ended = tokio::select! {
        _ = &mut worker => Ended::Stopped,
        _ = &mut stop => {
            let _ = tell.send(true);
            (&mut worker).await;
            Ended::Stopped
        }
        _ = renewals => {
            tracing::error!("leader election: lease lost; stopping");
            let _ = tell.send(true);
            (&mut worker).await;
            Ended::LostLease
        }
    };
    lock.release().await;
    ended
}
