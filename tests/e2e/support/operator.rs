//! One test's world: a namespace on the shared control plane, a provider simulator over
//! HTTP, a credentials Secret, and the controller (in-process, scoped to the namespace),
//! which a test can stop abruptly and start again.

use super::control_plane::ControlPlane;
use super::install_crd;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use rentedhost_operator::api::{LastError, RentedHost};
use rentedhost_operator::controller::{Config, credentials::Home};
use rentedhost_operator::metrics::Metrics;
use rentedhost_operator::provider::ClientSettings;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xds_simulator as simulator;
use xds_simulator::Endpoint;
use xds_simulator::{Freedom, Simulator, catalogue::DEMO_ACCOUNT};

pub const CREDENTIALS: &str = "xds-credentials";

pub struct World {
    pub client: kube::Client,
    pub ns: String,
    pub sim: Simulator,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    controller: Option<tokio::task::JoinHandle<()>>,
    /// Replicas under leader election (see [`World::start_replica`]).
    replicas: Vec<tokio::task::JoinHandle<()>>,
    /// The client controllers and replicas start with (`client` unless set).
    controller_client: Option<kube::Client>,
}

/// Test timings: the retry table at 1/50 (15 s → 0.3 s), fast polls, a 3 s create grace.
pub fn test_config(sim_url: &str, ns: &str) -> Config {
    Config {
        provider: ClientSettings {
            base_url: sim_url.to_string(),
            timeout: Duration::from_secs(2),
            requests_per_second: 200.0,
            burst: 200,
            concurrency: 16,
        },
        home: Home {
            namespace: ns.to_string(),
            credentials_secret: Some(CREDENTIALS.to_string()),
        },
        namespace: Some(ns.to_string()),
        // Each world's simulator account is its own: every claim on it is in sight.
        shared_account: Some(false),
        poll_interval: Duration::from_secs(2),
        fast_poll_interval: Duration::from_millis(300),
        create_grace: Duration::from_secs(3),
        clock_skew: Duration::from_secs(2),
        retry_scale: 0.02,
        sweep_seen_for: Some(Duration::from_secs(1)),
        concurrency: 16,
        default_deletion_policy: rentedhost_operator::api::DeletionPolicy::Delete,
        instance: None,
    }
}

impl World {
    /// A namespace, a simulator with hosts that start in 500 ms, the default Secret, and a
    /// running controller. `tweak` adjusts the config before the controller starts.
    pub async fn start(prefix: &str, tweak: impl FnOnce(&mut Config)) -> World {
        World::start_on(install_crd(), prefix, tweak).await
    }

    /// [`World::start`] on a control plane of the test's own (with the CRD applied).
    pub async fn start_on(
        plane: &ControlPlane,
        prefix: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> World {
        super::logs::init();
        let client = plane.client().await;
        let ns = super::test_namespace(&client, prefix).await;
        let sim = Simulator::default();
        sim.state().timing = simulator::fast_timing(Duration::from_millis(500));
        // Every test meets one reading of the API's freedoms, chosen by a printed seed
        // (XDS_SIM_SEED=N repeats a run).
        let seed = std::env::var("XDS_SIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        let freedom = Freedom::from_seed(seed);
        println!("[{prefix}] simulator XDS_SIM_SEED={seed}: {freedom:?}");
        sim.state().freedom = freedom;
        let (addr, _task) = sim.serve(0).await.unwrap();
        let mut config = test_config(&format!("http://{addr}"), &ns);
        tweak(&mut config);
        let world = World {
            client,
            ns,
            sim,
            config,
            metrics: Arc::new(Metrics::default()),
            controller: None,
            replicas: Vec::new(),
            controller_client: None,
        };
        world
            .put_secret(CREDENTIALS, DEMO_ACCOUNT.0, DEMO_ACCOUNT.1)
            .await;
        let mut world = world;
        world.start_controller();
        world
    }

    pub fn start_controller(&mut self) {
        self.start_controller_as(self.controller_client());
    }

    fn controller_client(&self) -> kube::Client {
        self.controller_client
            .clone()
            .unwrap_or_else(|| self.client.clone())
    }

    /// Controllers started from now on see their watches `lag` behind the API server.
    pub async fn lag_watches(&mut self, lag: Duration) {
        let plane = install_crd();
        self.controller_client = Some(plane.client_with_watch_lag(lag).await);
    }

    /// Restarts the controller with a client whose `method` requests to paths containing
    /// `path` wait while the returned hold is armed.
    pub async fn restart_holding(
        &mut self,
        method: http::Method,
        path: &'static str,
    ) -> Arc<super::client_faults::Hold> {
        let hold = Arc::new(super::client_faults::Hold::default());
        self.kill_controller().await;
        let client = install_crd()
            .client_holding(method, path, hold.clone())
            .await;
        self.controller_client = Some(client);
        self.start_controller();
        hold
    }

    /// Starts the controller with its own client (another identity, say).
    pub fn start_controller_as(&mut self, client: kube::Client) {
        assert!(self.controller.is_none(), "controller already running");
        let config = self.config.clone();
        let metrics = self.metrics.clone();
        self.controller = Some(tokio::spawn(async move {
            let alone = None;
            rentedhost_operator::operator::run_replica(
                client,
                config,
                metrics,
                alone,
                std::future::pending(),
            )
            .await;
        }));
    }

    /// Starts a replica that reconciles only while it holds the namespace's Lease (2 s), as
    /// the chart's Deployment with several replicas does; it has metrics (and readiness) of
    /// its own, as a process does.
    pub fn start_replica(&mut self, identity: &str) -> Arc<Metrics> {
        use rentedhost_operator::leader::{Leadership, LeaseConfig};
        let leadership = Leadership::elected();
        let mut config = self.config.clone();
        config.instance = Some(identity.to_string());
        let lease = LeaseConfig {
            namespace: self.ns.clone(),
            name: "rentedhost-operator".into(),
            identity: identity.to_string(),
            duration: Duration::from_secs(2),
            leadership,
        };
        let own = Arc::new(Metrics::default());
        let (client, metrics) = (self.controller_client(), own.clone());
        self.replicas.push(tokio::spawn(async move {
            let election = Some(lease);
            rentedhost_operator::operator::run_replica(
                client,
                config,
                metrics,
                election,
                std::future::pending(),
            )
            .await;
        }));
        own
    }

    /// Stops replica `i` at once (as a crash would); it leaves its lease to expire.
    pub async fn kill_replica(&mut self, i: usize) {
        let task = self.replicas.remove(i);
        task.abort();
        let _ = task.await;
    }

    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// Stops the controller at once, wherever it is (as a crash would).
    pub async fn kill_controller(&mut self) {
        if let Some(task) = self.controller.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub fn api(&self) -> Api<RentedHost> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// A second, funded and verified account on the simulator: `other-account`, secret
    /// `other-secret`.
    pub fn add_other_account(&self) {
        let account = simulator::Account {
            secret: "other-secret".into(),
            balance: 1_000_000.0,
            real_name_verified: true,
            wallet_error: false,
        };
        self.sim.add_account("other-account", account);
    }

    pub async fn put_secret(&self, name: &str, uuid: &str, secret: &str) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let mut s = Secret::default();
        s.metadata.name = Some(name.to_string());
        s.string_data = Some(BTreeMap::from([
            ("uuid".to_string(), uuid.to_string()),
            ("secret".to_string(), secret.to_string()),
        ]));
        secrets
            .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&s))
            .await
            .unwrap();
    }

    pub async fn create(&self, name: &str, spec: serde_json::Value) -> RentedHost {
        let obj: RentedHost = serde_json::from_value(serde_json::json!({
            "apiVersion": "xuandashi.dev/v1alpha1",
            "kind": "RentedHost",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        self.api()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap()
    }

    /// A world whose object `rh` waits for the outcome of a createRent that rented nothing
    /// and whose answer was not JSON.
    pub async fn awaiting_create_outcome(prefix: &str) -> World {
        let world = World::start(prefix, |_| {}).await;
        world
            .sim
            .inject(Endpoint::CreateRent, [simulator::Fault::NonJson]);
        world.create("rh", demo_spec()).await;
        world
            .wait_condition("rh", "Ready", "False", "AwaitingCreateOutcome")
            .await;
        world
    }

    /// Deletes the object, as `kubectl delete` would (its finalizer may keep it a while).
    pub async fn delete(&self, name: &str) {
        self.api()
            .delete(name, &kube::api::DeleteParams::default())
            .await
            .unwrap();
    }

    /// Merge-patches the object, as a user would.
    pub async fn merge(&self, name: &str, patch: serde_json::Value) -> kube::Result<RentedHost> {
        let patch = Patch::Merge(&patch);
        self.api()
            .patch(name, &PatchParams::default(), &patch)
            .await
    }

    /// Merge-patches the object's spec, as a user would.
    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.merge(name, serde_json::json!({ "spec": spec }))
            .await
            .unwrap();
    }

    /// Sets one annotation of the object, as a user would.
    pub async fn annotate(&self, name: &str, key: &str, value: &str) {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        self.merge(name, patch).await.unwrap();
    }

    /// Waits (up to `limit` each) until every object of `names` has a host: fails on one
    /// that stops as CreateOutcomeUnknown instead, and on two that share a host. Returns
    /// each host's owner.
    pub async fn one_host_each(
        &self,
        names: &[String],
        limit: Duration,
    ) -> std::collections::HashMap<String, String> {
        let mut owners = std::collections::HashMap::new();
        for name in names {
            let obj = self
                .wait_for(name, limit, "rented", |o| {
                    host_id(o).is_some() || is(o, "Ready", "False", "CreateOutcomeUnknown")
                })
                .await;
            let id = host_id(&obj).unwrap_or_else(|| panic!("{name} stopped: {:?}", obj.status));
            if let Some(other) = owners.insert(id.clone(), name.clone()) {
                panic!("{name} and {other} share host {id}");
            }
        }
        owners
    }

    /// Expires the simulator's tokens and waits until the operator has fetched a new one.
    pub async fn expire_tokens_until_renewed(&self) {
        let issued = self.sim.calls(Endpoint::GetToken);
        self.sim.expire_tokens();
        let start = Instant::now();
        while self.sim.calls(Endpoint::GetToken) == issued {
            assert!(start.elapsed() < Duration::from_secs(30), "no renewal");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The account's hosts that are not in `before`.
    pub fn hosts_not_in(&self, before: &std::collections::HashSet<String>) -> Vec<String> {
        let hosts = self.sim.host_ids().into_iter();
        hosts.filter(|id| !before.contains(id)).collect()
    }

    pub async fn get(&self, name: &str) -> RentedHost {
        self.api().get(name).await.unwrap()
    }

    /// Waits until the simulator counted `count` calls to `endpoint`.
    pub async fn wait_calls(&self, endpoint: Endpoint, count: u64) {
        let what = format!("{count} {} calls", endpoint.as_str());
        super::eventually(Duration::from_secs(30), &what, || async {
            match self.sim.calls(endpoint) {
                n if n >= count => Ok(()),
                n => Err(format!("{n} so far")),
            }
        })
        .await
    }

    /// A Secret of the namespace, awaited: a connection Secret is written beside the status
    /// that shows its host running, so it may land just after it.
    pub async fn wait_secret(&self, name: &str) -> Secret {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        super::eventually(Duration::from_secs(30), name, || async {
            match secrets.get_opt(name).await {
                Ok(Some(secret)) => Ok(secret),
                Ok(None) => Err("not found".to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Polls the object every 50 ms until `done` holds; fails with the last state.
    pub async fn wait_for(
        &self,
        name: &str,
        limit: Duration,
        what: &str,
        done: impl Fn(&RentedHost) -> bool,
    ) -> RentedHost {
        let start = Instant::now();
        loop {
            let obj = self.api().get_opt(name).await.unwrap();
            if let Some(obj) = &obj
                && done(obj)
            {
                return obj.clone();
            }
            assert!(
                start.elapsed() < limit,
                "{name}: not {what} within {limit:?}; last seen: {:#?}",
                obj.map(|o| o.status)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `name` has a host id.
    pub async fn wait_rented(&self, name: &str, limit: Duration) -> RentedHost {
        self.wait_for(name, limit, "rented", |o| host_id(o).is_some())
            .await
    }

    /// How many times `reason` was reported about `name`.
    pub async fn count_events(&self, name: &str, reason: &str) -> usize {
        let reasons = self.event_reasons(name).await;
        reasons.iter().filter(|r| *r == reason).count()
    }

    /// Waits (30 s at most) until condition `type_` of `name` has `status` and `reason`.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> RentedHost {
        let what = format!("{type_}={status} ({reason})");
        self.wait_for(name, Duration::from_secs(30), &what, |o| {
            is(o, type_, status, reason)
        })
        .await
    }

    /// Waits until `name`'s `condition` is False for `reason`, and returns the last error
    /// the status explains it with.
    pub async fn failed(&self, name: &str, condition: &str, reason: &str) -> LastError {
        let obj = self.wait_condition(name, condition, "False", reason).await;
        obj.status.and_then(|s| s.last_error).unwrap_or_else(|| {
            panic!("{name}: {condition}=False ({reason}) without status.lastError")
        })
    }

    /// Waits until `name` is rented, and checks that it took `creates` createRent calls and
    /// that its host is the only one on the account.
    pub async fn rented_after(&self, name: &str, creates: u64) -> RentedHost {
        let obj = self
            .wait_for(name, Duration::from_secs(30), "rented", |o| {
                host_id(o).is_some()
            })
            .await;
        assert_eq!(self.sim.calls(Endpoint::CreateRent), creates, "{name}");
        assert_eq!(self.sim.host_ids(), vec![host_id(&obj).unwrap()]);
        obj
    }

    /// Deletes the world's namespace, as `kubectl delete namespace` would.
    pub async fn delete_namespace(&self) {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(&self.ns, &Default::default())
            .await
            .unwrap();
    }

    /// Waits until the world's namespace is gone: how long it took, or what is left
    /// (the account's hosts) once `limit` has passed.
    pub async fn namespace_gone(&self, limit: Duration) -> Result<Duration, String> {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let start = Instant::now();
        while namespaces.get_opt(&self.ns).await.unwrap().is_some() {
            if start.elapsed() > limit {
                return Err(format!(
                    "namespace {} still there after {limit:?}; hosts {:?}",
                    self.ns,
                    self.sim.host_ids()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(start.elapsed())
    }

    pub async fn wait_gone(&self, name: &str, limit: Duration) {
        let start = Instant::now();
        while self.api().get_opt(name).await.unwrap().is_some() {
            assert!(
                start.elapsed() < limit,
                "{name} still exists after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Events about one object, oldest first.
    pub async fn events(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut list = events
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .unwrap()
            .items;
        list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        list
    }

    /// Reasons of the events about one object, once per occurrence (a series repeats its
    /// reason as often as it counted it).
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        let mut reasons = Vec::new();
        for e in self.events(name).await {
            let times = e
                .series
                .as_ref()
                .and_then(|s| s.count)
                .or(e.count)
                .unwrap_or(1)
                .max(1);
            for _ in 0..times {
                reasons.extend(e.reason.clone());
            }
        }
        reasons
    }

    /// Waits until `reason` was reported `count` times about `name`; returns all reasons.
    pub async fn wait_events(&self, name: &str, reason: &str, count: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let reasons = self.event_reasons(name).await;
            if reasons.iter().filter(|r| *r == reason).count() >= count {
                return reasons;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name}: {count} x {reason} expected, got {reasons:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // The provider calls of the scenario, for the record (`--nocapture` shows them).
        let mut calls: Vec<(String, u64)> = self
            .sim
            .state()
            .calls
            .iter()
            .map(|(e, n)| (e.as_str().to_string(), *n))
            .collect();
        calls.sort();
        let calls: Vec<String> = calls.into_iter().map(|(e, n)| format!("{e}={n}")).collect();
        println!("provider calls [{}]: {}", self.ns, calls.join(" "));
        if let Some(task) = self.controller.take() {
            task.abort();
        }
        for task in self.replicas.drain(..) {
            task.abort();
        }
    }
}

/// A condition's (status, reason) on an object.
pub fn condition(obj: &RentedHost, type_: &str) -> Option<(String, String)> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

pub fn is(obj: &RentedHost, type_: &str, status: &str, reason: &str) -> bool {
    condition(obj, type_) == Some((status.to_string(), reason.to_string()))
}

pub fn host_id(obj: &RentedHost) -> Option<String> {
    obj.status.as_ref()?.host_id.clone()
}

/// The spec of the demo package and image, rented for 5 months.
pub fn demo_spec() -> serde_json::Value {
    serde_json::json!({"packageId": "teTapaSUFq", "imageId": "507", "period": {"count": 5, "unit": "Month"}})
}
