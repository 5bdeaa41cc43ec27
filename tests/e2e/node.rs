//! The chart's Deployment under real kubelets (`support::node`): installed with Helm,
//! rolled to a new image while objects are being created, two replicas with one evicted
//! through the PodDisruptionBudget, the leader deleted in the middle of a slow createRent.
//! Each prints what it measured.

use crate::support::node::NodeCluster;
use crate::support::operator::demo_spec;
use crate::support::process::{Process, demo_hosts, free_port, simulator_with};
use crate::support::{eventually, run_ok};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, EvictParams, ListParams, PostParams};
use rentedhost_operator::api::RentedHost;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

const RELEASE: &str = "rho";
const LEASE: &str = "rentedhost-operator";

/// One release of the chart on the nodes, in a namespace of its own, against its own
/// simulator process.
struct Install {
    cluster: &'static NodeCluster,
    client: kube::Client,
    ns: String,
    sim_port: u16,
    _sim: Process,
    values: tempfile::NamedTempFile,
}

/// A RentedHost of the demo package named `name`.
fn demo_object(name: &str) -> RentedHost {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHost",
        "metadata": {"name": name},
        "spec": demo_spec(),
    }))
    .unwrap()
}

impl Install {
    /// `helm install --wait` of the chart with `replicas`, as users install it but on the
    /// host network: the operator reaches the API server at 127.0.0.1.
    async fn new(prefix: &str, replicas: u32, latency: Option<&str>) -> Install {
        let cluster = NodeCluster::get();
        let client = cluster.plane.client().await;
        let ns = crate::support::test_namespace(&client, prefix).await;
        let (sim, sim_port) = simulator_with(latency).await;
        let values = format!(
            "image: {{repository: rentedhost-operator, tag: \"0.1.0\"}}\n\
             replicaCount: {replicas}\n\
             hostNetwork: true\n\
             credentials: {{uuid: demo-account, secret: demo-secret}}\n\
             provider: {{url: \"http://127.0.0.1:{sim_port}\"}}\n\
             metrics: {{port: {http}}}\n\
             pollInterval: 2s\n\
             fastPollInterval: 500ms\n\
             createGrace: 5s\n\
             watchNamespace: {ns}\n\
             leaderElection: {{leaseDuration: 4s}}\n\
             readinessProbe: {{enabled: true, periodSeconds: 1, timeoutSeconds: 2, failureThreshold: 3, successThreshold: 1, initialDelaySeconds: 0}}\n\
             extraEnv:\n\
             - {{name: KUBERNETES_SERVICE_HOST, value: \"127.0.0.1\"}}\n\
             - {{name: KUBERNETES_SERVICE_PORT, value: \"{port}\"}}\n",
            http = free_port(),
            port = cluster.plane.port(),
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), values).unwrap();
        let install = Install {
            cluster,
            client,
            ns,
            sim_port,
            _sim: sim,
            values: file,
        };
        let started = Instant::now();
        install.helm(&["install", RELEASE], &[]);
        println!(
            "[{}] helm install --wait: {:?} until {replicas} pod(s) Ready",
            install.ns,
            started.elapsed()
        );
        install
    }

    /// `helm <verb...> -n ns -f values <extra...> --wait` of the chart.
    fn helm(&self, verb: &[&str], extra: &[&str]) {
        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/rentedhost-operator");
        let out = self
            .cluster
            .plane
            .helm()
            .args(verb)
            .arg(&chart)
            .args([
                "-n",
                &self.ns,
                "--skip-crds",
                "--wait",
                "--timeout",
                "120s",
                "-f",
            ])
            .arg(self.values.path())
            .args(extra)
            .output()
            .unwrap();
        if !out.status.success() {
            panic!(
                "helm {verb:?} failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.describe()
            );
        }
    }

    /// What a person would look at when it goes wrong.
    fn describe(&self) -> String {
        let out = self
            .cluster
            .plane
            .kubectl()
            .args(["describe", "deployment,replicaset,pod", "-n", &self.ns])
            .output()
            .unwrap();
        let logs = self
            .cluster
            .plane
            .kubectl()
            .args([
                "logs",
                "-n",
                &self.ns,
                "-l",
                "app.kubernetes.io/name=rentedhost-operator",
                "--tail=30",
                "--prefix",
            ])
            .output()
            .unwrap();
        format!(
            "{}\n{}\nkubelet (node 1):\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&logs.stdout),
            self.cluster.node_log(0, "kubelet")
        )
    }

    fn api(&self) -> Api<RentedHost> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn pods(&self) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let selector = "app.kubernetes.io/name=rentedhost-operator";
        pods.list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
    }

    async fn holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.ns);
        leases.get_opt(LEASE).await.ok()??.spec?.holder_identity
    }

    async fn create(&self, name: &str) {
        self.api()
            .create(&PostParams::default(), &demo_object(name))
            .await
            .unwrap();
    }

    /// Waits until every object has a host and is Ready; their host ids.
    async fn all_ready(&self, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let objects = self.api().list(&ListParams::default()).await.unwrap().items;
            let ready = |o: &RentedHost| {
                o.status.as_ref().is_some_and(|s| {
                    s.host_id.is_some()
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            };
            if objects.iter().all(ready) {
                return objects
                    .iter()
                    .filter_map(|o| o.status.as_ref()?.host_id.clone())
                    .collect();
            }
            assert!(
                start.elapsed() < limit,
                "not every object Ready within {limit:?}: {:?}\n{}",
                objects
                    .iter()
                    .filter(|o| !ready(o))
                    .map(|o| (o.metadata.name.clone(), o.status.clone()))
                    .collect::<Vec<_>>(),
                self.describe()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every object has its own host, and the account holds exactly those.
    async fn rented_once_each(&self, ids: &[String]) {
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "a host shared: {ids:?}");
        assert_eq!(
            demo_hosts(self.sim_port).await,
            ids.len() as i64,
            "hosts on the account: one per object, none rented twice"
        );
    }

    /// The `Created` events: which pod recorded each create, and when.
    /// The Created events, once there are `count` of them: they are sent by the operator's
    /// event queue after the status write a test waited for.
    async fn creates(&self, count: usize) -> Vec<(String, jiff::Timestamp)> {
        eventually(Duration::from_secs(30), "Created events", || async {
            let creates = self.created_events();
            match creates.len() >= count {
                true => Ok(creates),
                false => Err(format!("{} of {count}", creates.len())),
            }
        })
        .await
    }

    fn created_events(&self) -> Vec<(String, jiff::Timestamp)> {
        let out = run_ok(self.cluster.plane.kubectl().args([
            "get",
            "events.events.k8s.io",
            "-n",
            &self.ns,
            "--field-selector",
            "reason=Created",
            "-o",
            "json",
        ]));
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                let instance = e["reportingInstance"].as_str()?.to_string();
                let at = e["eventTime"].as_str()?.parse().ok()?;
                Some((instance, at))
            })
            .collect()
    }

    /// Deletes every object (the operator, still running, releases their hosts).
    fn delete_objects(&self) {
        run_ok(self.cluster.plane.kubectl().args([
            "delete",
            "rentedhosts",
            "--all",
            "-n",
            &self.ns,
            "--timeout=90s",
        ]));
    }

    /// Releases every object's host, then uninstalls as users do (`helm uninstall --wait`,
    /// which removes the operator before its credentials Secret) and waits until the
    /// Secret is gone: no object needs it, so nothing holds it.
    fn uninstall(&self) -> Result<(), String> {
        let _ = self
            .cluster
            .plane
            .kubectl()
            .args([
                "delete",
                "rentedhosts",
                "--all",
                "-n",
                &self.ns,
                "--timeout=90s",
            ])
            .output();
        // Once no object needs it, the operator lets the credentials Secret go.
        let started = Instant::now();
        loop {
            let out = run_ok(self.cluster.plane.kubectl().args([
                "get",
                "secrets",
                "-n",
                &self.ns,
                "-o",
                "jsonpath={.items[*].metadata.finalizers}",
            ]));
            if !out.contains("xuandashi.dev/credentials-in-use") {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("a Secret is still held for nobody: {out}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = self
            .cluster
            .plane
            .helm()
            .args([
                "uninstall",
                RELEASE,
                "-n",
                &self.ns,
                "--wait",
                "--timeout",
                "60s",
            ])
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(format!(
                "helm uninstall: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // Connection Secrets go with their objects (garbage collection, in its time); the
        // credentials Secret goes with the release.
        let credentials = format!("{RELEASE}-rentedhost-operator-credentials");
        let out = self
            .cluster
            .plane
            .kubectl()
            .args([
                "get",
                "secret",
                &credentials,
                "-n",
                &self.ns,
                "--ignore-not-found",
                "-o",
                "name",
            ])
            .output()
            .unwrap();
        let left = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match left.is_empty() {
            true => Ok(()),
            false => Err(format!("left after helm uninstall --wait: {left}")),
        }
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        if let Err(problem) = self.uninstall()
            && !std::thread::panicking()
        {
            panic!("[{}] {problem}", self.ns);
        }
    }
}

fn running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

#[tokio::test]
async fn helm_install_runs_the_operator_as_a_pod_under_the_kubelet() {
    let cluster = NodeCluster::get();
    let _one_at_a_time = cluster.lock().await;
    let install = Install::new("node-install", 1, None).await;
    let deployments: Api<Deployment> = Api::namespaced(install.client.clone(), &install.ns);
    let deployment = deployments
        .get(&format!("{RELEASE}-rentedhost-operator"))
        .await
        .unwrap();
    let status = deployment.status.unwrap();
    assert_eq!(
        status.available_replicas,
        Some(1),
        "Available with the kubelet's probes"
    );
    let pods = install.pods().await;
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    let spec = pod.spec.as_ref().unwrap();
    assert!(
        spec.node_name
            .as_deref()
            .unwrap()
            .starts_with("testenv-node-")
    );
    // The token the kubelet projected is what the operator authenticates with: it leads,
    // which takes the Lease as the chart's ServiceAccount.
    let volumes = spec.volumes.iter().flatten();
    assert!(
        volumes.clone().any(|v| v.projected.is_some()),
        "a projected token volume"
    );
    let start = Instant::now();
    while install.holder().await.as_deref() != pod.metadata.name.as_deref() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pod never led"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = Instant::now();
    for i in 0..3 {
        install.create(&format!("rh-{i}")).await;
    }
    let ids = install.all_ready(Duration::from_secs(60)).await;
    println!(
        "[{}] 3 objects Ready {:?} after they were applied",
        install.ns,
        start.elapsed()
    );
    install.rented_once_each(&ids).await;
    let container = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(container.restart_count, 0, "never restarted");
    // The objects go, their hosts released.
    let started = Instant::now();
    install.delete_objects();
    assert_eq!(demo_hosts(install.sim_port).await, 0, "every host released");
    println!(
        "[{}] 3 objects deleted, their hosts released, in {:?}",
        install.ns,
        started.elapsed()
    );
}

/// `helm upgrade --wait` to a new image while objects are being created: the new pod stands
/// by (Ready) until the old one, on SIGTERM, finishes its calls and releases the Lease. On
/// the main this started from, the new pod was never Ready (503 until it led) and the
/// rollout, and `helm upgrade --wait`, timed out.
// Two workers: helm blocks one (`block_in_place`) while the creates and the watch on the old
// pod go on in the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_upgrade_rolls_over_while_objects_are_created_and_rents_once_each() {
    let cluster = NodeCluster::get();
    let _one_at_a_time = cluster.lock().await;
    let install = Install::new("node-upgrade", 1, None).await;
    let old = install.pods().await[0].metadata.name.clone().unwrap();
    let creating = {
        let api = install.api();
        tokio::spawn(async move {
            for i in 0..40 {
                let obj = demo_object(&format!("during-{i}"));
                api.create(&PostParams::default(), &obj).await.unwrap();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    // When the old pod is asked to stop: the kubelet sends SIGTERM as it sees this.
    let sigterm = {
        let pods: Api<Pod> = Api::namespaced(install.client.clone(), &install.ns);
        let old = old.clone();
        tokio::spawn(async move {
            loop {
                let pod = pods.get_opt(&old).await.unwrap();
                if pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()) {
                    return jiff::Timestamp::now();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    tokio::task::block_in_place(|| {
        install.helm(&["upgrade", RELEASE], &["--set", "image.tag=0.1.0-next"])
    });
    let sigterm = sigterm.await.unwrap();
    let rollout = started.elapsed();
    creating.await.unwrap();
    let pods = install.pods().await;
    let new: Vec<&Pod> = pods.iter().filter(|p| running(p)).collect();
    assert_eq!(new.len(), 1, "one pod after the rollout");
    let new_name = new[0].metadata.name.clone().unwrap();
    assert_ne!(new_name, old);
    let image = &new[0].spec.as_ref().unwrap().containers[0].image;
    assert_eq!(image.as_deref(), Some("rentedhost-operator:0.1.0-next"));
    for i in 0..3 {
        install.create(&format!("after-{i}")).await;
    }
    let ids = install.all_ready(Duration::from_secs(90)).await;
    assert_eq!(ids.len(), 43);
    install.rented_once_each(&ids).await;
    let creates = install.creates(43).await;
    let by_old = creates.iter().filter(|(i, _)| *i == old).count();
    let first_new = creates
        .iter()
        .filter(|(i, _)| *i == new_name)
        .map(|(_, at)| *at)
        .min()
        .expect("the new pod created");
    let last_old = creates
        .iter()
        .filter(|(i, _)| *i == old)
        .map(|(_, at)| *at)
        .max();
    println!(
        "[{}] helm upgrade --wait {rollout:?}; creates: {by_old} by the old pod, {} by the new; \
         the old pod's SIGTERM to the new leader's first create: {:?}; \
         last create of the old pod to the first of the new: {:?}",
        install.ns,
        creates.len() - by_old,
        first_new.duration_since(sigterm),
        last_old.map(|l| first_new.duration_since(l))
    );
    assert_eq!(creates.len(), 43, "one create each");
}

/// Two replicas: both Ready (the standby too), so the PodDisruptionBudget allows evicting
/// the leader (what `kubectl drain` does); the standby takes over within one lease duration.
/// On the main this started from, the standby was never Ready: `helm install --wait` timed
/// out, and the PDB (minAvailable 1, one Ready pod) refused every eviction.
#[tokio::test]
async fn two_replicas_are_ready_and_evicting_the_leader_hands_over() {
    let cluster = NodeCluster::get();
    let _one_at_a_time = cluster.lock().await;
    let install = Install::new("node-evict", 2, None).await;
    let pods = install.pods().await;
    assert_eq!(pods.iter().filter(|p| running(p)).count(), 2, "both Ready");
    let nodes: BTreeSet<_> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    assert_eq!(nodes.len(), 2, "one per node (the host port)");
    for i in 0..3 {
        install.create(&format!("before-{i}")).await;
    }
    install.all_ready(Duration::from_secs(60)).await;
    let leader = install.holder().await.expect("a leader");
    let standby = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .find(|n| *n != leader)
        .unwrap();
    let pod_api: Api<Pod> = Api::namespaced(install.client.clone(), &install.ns);
    let evicted = Instant::now();
    pod_api
        .evict(&leader, &EvictParams::default())
        .await
        .expect("the PDB allows evicting the leader: the standby is Ready");
    // The evicted leader releases the Lease on its way out; the standby, or the pod that
    // replaces the evicted one if it asks first, takes it.
    let successor = loop {
        match install.holder().await {
            Some(holder) if !holder.is_empty() && holder != leader => break holder,
            _ => {}
        }
        assert!(
            evicted.elapsed() < Duration::from_secs(20),
            "nobody took over\n{}",
            install.describe()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = evicted.elapsed();
    let who = match successor == standby {
        true => "the standby",
        false => "the evicted pod's replacement",
    };
    println!("[{}] leader evicted; {who} led {took:?} after", install.ns);
    assert!(
        took < Duration::from_secs(4 + 2),
        "within one lease duration (4 s): {took:?}"
    );
    for i in 0..3 {
        install.create(&format!("after-{i}")).await;
    }
    let ids = install.all_ready(Duration::from_secs(60)).await;
    assert_eq!(ids.len(), 6);
    install.rented_once_each(&ids).await;
}

/// The leader deleted (SIGTERM) in the middle of a slow createRent: the answer is recorded
/// before the process exits, within the grace period, and the host is not rented again.
#[tokio::test]
async fn deleting_the_leader_during_a_slow_create_records_the_answer_before_it_exits() {
    let cluster = NodeCluster::get();
    let _one_at_a_time = cluster.lock().await;
    let install = Install::new("node-sigterm", 1, Some("3s")).await;
    let leader = install.pods().await[0].metadata.name.clone().unwrap();
    install.create("slow").await;
    let start = Instant::now();
    loop {
        let obj = install.api().get("slow").await.unwrap();
        if obj
            .status
            .as_ref()
            .is_some_and(|s| s.create_pending.is_some())
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no create sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deleted = Instant::now();
    run_ok(install.cluster.plane.kubectl().args([
        "delete",
        "pod",
        &leader,
        "-n",
        &install.ns,
        "--wait=false",
    ]));
    let ids = install.all_ready(Duration::from_secs(120)).await;
    println!(
        "[{}] leader deleted mid-create; the object Ready {:?} after",
        install.ns,
        deleted.elapsed()
    );
    install.rented_once_each(&ids).await;
    let creates = install.creates(1).await;
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert_eq!(
        creates[0].0, leader,
        "the deleted pod recorded its create's answer"
    );
}
