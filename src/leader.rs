//! Leader election on a `coordination.k8s.io` Lease, so that of several replicas exactly one
//! reconciles (and so creates) at a time. The lease is renewed at a third of its duration,
//! released on shutdown, and a replica that cannot renew stops reconciling.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Leader election (flags of `run`; the defaults live here).
#[derive(Debug, Clone, clap::Args)]
pub struct Election {
    /// Elect a leader on a Lease, so that of several replicas one reconciles.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease (in the operator's namespace).
    #[arg(long, default_value = "rentedhost-operator")]
    pub lease_name: String,
    /// Lease duration: a replica that stops renewing loses the lease this long after.
    #[arg(long, default_value = "15s", value_parser = crate::config::positive_duration)]
    pub lease_duration: Duration,
}

impl Election {
    /// The Lease this replica stands for in `namespace` as `identity`, if it is elected.
    pub fn lease(&self, namespace: &str, identity: &str) -> Option<LeaseConfig> {
        self.leader_election.then(|| LeaseConfig {
            namespace: namespace.to_string(),
            name: self.lease_name.clone(),
            identity: identity.to_string(),
            duration: self.lease_duration,
            leadership: Leadership::elected(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    pub duration: Duration,
    /// Told how long this replica may act as leader.
    pub leadership: Leadership,
}

/// Whether this replica may act as leader now: money is spent only while it may. Without
/// election it always may; with election, until two thirds of a lease duration after the
/// start of the last renewal the API server accepted (other replicas wait a whole duration
/// from when they saw that renewal, which is later).
#[derive(Debug, Clone)]
pub struct Leadership {
    until: Option<Arc<Mutex<Option<Instant>>>>,
    /// Whether this replica took the lease from another that held it and did not let it go
    /// (it crashed, hung or was cut off): calls that replica made may still land.
    took_over: Arc<AtomicBool>,
}

impl Leadership {
    /// A replica that runs alone (no election). It cannot tell a first start from a
    /// restart after a crash, so it counts as having taken over.
    pub fn always() -> Leadership {
        Leadership {
            until: None,
            took_over: Arc::new(AtomicBool::new(true)),
        }
    }

    /// A replica that leads only while it holds the lease.
    pub fn elected() -> Leadership {
        Leadership {
            until: Some(Arc::default()),
            took_over: Arc::default(),
        }
    }

    pub fn is_leading(&self) -> bool {
        match &self.until {
            None => true,
            Some(until) => until.lock().is_some_and(|u| Instant::now() < u),
        }
    }

    /// Whether the replica that led before this one may still have calls under way: it
    /// did not release the lease (or, without election, may have crashed).
    pub fn took_over(&self) -> bool {
        self.took_over.load(Ordering::SeqCst)
    }

    fn hold_until(&self, until: Option<Instant>) {
        if let Some(slot) = &self.until {
            *slot.lock() = until;
        }
    }
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
    /// The other holder's lease as last seen (holder and renew time), and when this replica
    /// saw it change: expiry is judged on the local clock from that moment, never by
    /// comparing the holder's timestamps with ours (as client-go does).
    observed: Mutex<Option<(String, Instant)>>,
    /// Whether this process has held the lease yet.
    acquired: AtomicBool,
}

impl LeaseLock {
    /// Whether the lease held by someone else has gone a whole duration without change, as
    /// observed from here.
    fn expired(&self, spec: &LeaseSpec) -> bool {
        if spec.renew_time.is_none() {
            return true;
        }
        let seen = format!(
            "{:?}/{:?}",
            spec.holder_identity,
            spec.renew_time.as_ref().map(|t| t.0)
        );
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
        let mut observed = self.observed.lock();
        match observed.as_ref() {
            Some((last, at)) if *last == seen => at.elapsed() > duration,
            _ => {
                *observed = Some((seen, Instant::now()));
                false
            }
        }
    }
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
                let live = holder != self.config.identity && !holder.is_empty();
                if live && !self.expired(&spec) {
                    return Ok(false);
                }
                // Our own identity, never released: this pod's container before a restart.
                let restarted = holder == self.config.identity
                    && spec.renew_time.is_some()
                    && !self.acquired.load(Ordering::SeqCst);
                if live || restarted {
                    self.config
                        .leadership
                        .took_over
                        .store(true, Ordering::SeqCst);
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

    /// One attempt to take or renew the lease, bounded by `deadline`; when it succeeds this
    /// replica may lead until `deadline` after the attempt started.
    async fn attempt(&self, deadline: Duration) -> Result<bool, String> {
        let started = Instant::now();
        match tokio::time::timeout(deadline, self.try_hold()).await {
            Ok(Ok(true)) => {
                self.acquired.store(true, Ordering::SeqCst);
                self.config.leadership.hold_until(Some(started + deadline));
                Ok(true)
            }
            Ok(Ok(false)) => Ok(false),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {deadline:?}")),
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
        observed: Mutex::default(),
        acquired: AtomicBool::new(false),
    };
    // A renewal that hangs must not keep a deposed leader working: each attempt has this
    // long, and leadership lapses at the same point after the last accepted renewal.
    let deadline = lock.config.duration * 2 / 3;
    let retry = lock.config.duration / 4;
    tokio::pin!(stop);
    let mut told_standby = false;
    loop {
        match lock.attempt(deadline).await {
            Ok(true) => break,
            Ok(false) if !told_standby => {
                told_standby = true;
                tracing::info!(lease = %lock.config.name, identity = %lock.config.identity, "standing by: another replica holds the lease");
            }
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
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(lock.config.duration / 3).await;
            let started = Instant::now();
            match lock.attempt(deadline).await {
                Ok(true) => last_renewal = started,
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, "leader election: renewal failed");
                    if last_renewal.elapsed() > deadline {
                        return;
                    }
                }
            }
        }
    };
    let worker = work(Shutdown(listen));
    tokio::pin!(worker);
    tokio::pin!(renewals);
    let ended = tokio::select! {
        _ = &mut worker => Ended::Stopped,
        _ = &mut stop => {
            let _ = tell.send(true);
            // In-flight reconciles finish while the lease is still renewed: a rented host's
            // id is written while this replica may still write it.
            tokio::select! {
                _ = &mut worker => {}
                _ = &mut renewals => (&mut worker).await,
            }
            Ended::Stopped
        }
        _ = &mut renewals => {
            tracing::error!("leader election: lease lost; stopping");
            let _ = tell.send(true);
            (&mut worker).await;
            Ended::LostLease
        }
    };
    lock.config.leadership.hold_until(None);
    // An API server that stopped answering must not keep the process from ending.
    if tokio::time::timeout(deadline, lock.release())
        .await
        .is_err()
    {
        tracing::warn!("leader election: the lease could not be released in time");
    }
    ended
}
