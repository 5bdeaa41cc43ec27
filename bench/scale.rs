//! `make bench`: what the controller costs at scale, against what the machine allows.
//!
//! On a control plane of its own, for each N: a bare kube client creates N RentedHosts and
//! patches N statuses at the controller's concurrency (the **floor**: what the API server
//! allows); then the release binary, as its own process against the simulator (a fixed
//! latency per call, hosts that boot at once), reconciles N objects created at once, and the
//! run measures the time until every object has a host id and is Ready, the controller's
//! CPU seconds and peak RSS, and what it asked of the provider and of the API server per
//! object (from its own `/metrics`). The largest N then idles for a while: provider calls
//! per minute, CPU % and RSS. The table goes to stdout and to `bench/results.md`.
//!
//! Then the large-account row: an account that already has `BENCH_LARGE_ACCOUNT` hosts
//! (20,000) at the provider's default 5 requests/s, and `BENCH_LARGE_NEW` (100) objects
//! created at once: the time until all are rented (their creates, against the share the
//! limiter gives creates: all of the rate, before any listing page), until all are Ready,
//! the listing's age, and a power change made meanwhile (which must not wait for a listing).
//!
//! The budget row: `BENCH_BUDGETED_N` (1000) objects, the provider's limit lifted, in a
//! namespace with one RentedHostBudget that fits every create, so each create reserves its
//! price and spends it in the budget's status: what a budget costs, against the row of the
//! same N without one.
//!
//! Settings (environment): `BENCH_N` (`100,1000,5000`), `BENCH_RATE_LIMITED_N` (`1000`, the
//! row at the default provider rate limit; `0` leaves it out), `BENCH_BUDGETED_N` (`1000`;
//! `0` leaves the row out), `BENCH_LARGE_ACCOUNT`
//! (`20000`; `0` leaves the row out), `BENCH_LARGE_NEW` (`100`), `BENCH_LATENCY` (`50ms`),
//! `BENCH_CONCURRENCY` (`8`), `BENCH_STEADY_SECONDS` (`180`), `BENCH_OPERATOR` (the
//! release binary), `BENCH_SIMULATOR` (`xds-simulator`, built optimised), `BENCH_RESULTS` (`bench/results.md`; empty: not written).

#[allow(dead_code)]
#[path = "../tests/e2e/support/mod.rs"]
mod support;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use rentedhost_operator::api::{RentedHost, RentedHostBudget};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::ControlPlane;
use support::process::{Process, free_port, wait_http};

struct Settings {
    sizes: Vec<usize>,
    rate_limited: usize,
    /// Objects of the row under a budget (0: no such row).
    budgeted: usize,
    /// Hosts already on the account of the large-account row (0: no such row).
    large_account: usize,
    /// Objects created in the large-account row.
    large_new: usize,
    latency: String,
    concurrency: usize,
    steady: Duration,
    operator: PathBuf,
    simulator: PathBuf,
    results: Option<PathBuf>,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

impl Settings {
    fn from_env() -> Settings {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let release = root.join("target/x86_64-unknown-linux-gnu/release/rentedhost-operator");
        let number = |name: &str, default: &str| -> usize {
            let text = env_or(name, default);
            text.parse()
                .unwrap_or_else(|_| panic!("{name}={text}: not a number"))
        };
        let results = env_or("BENCH_RESULTS", "bench/results.md");
        Settings {
            sizes: env_or("BENCH_N", "100,1000,5000")
                .split(',')
                .map(|n| {
                    n.trim()
                        .parse()
                        .expect("BENCH_N: numbers separated by commas")
                })
                .collect(),
            rate_limited: number("BENCH_RATE_LIMITED_N", "1000"),
            budgeted: number("BENCH_BUDGETED_N", "1000"),
            large_account: number("BENCH_LARGE_ACCOUNT", "20000"),
            large_new: number("BENCH_LARGE_NEW", "100"),
            latency: env_or("BENCH_LATENCY", "50ms"),
            concurrency: number("BENCH_CONCURRENCY", "8"),
            steady: Duration::from_secs(number("BENCH_STEADY_SECONDS", "180") as u64),
            operator: std::env::var_os("BENCH_OPERATOR").map_or(release, PathBuf::from),
            simulator: std::env::var_os("BENCH_SIMULATOR")
                .map_or_else(release_simulator, PathBuf::from),
            results: (!results.is_empty()).then(|| root.join(results)),
        }
    }
}

/// The simulator built like the operator it serves (optimised), so that its own cost stays
/// small beside the controller's on the same two cores.
fn release_simulator() -> PathBuf {
    escargot::CargoBuild::new()
        .package("xds-simulator")
        .bin("xds-simulator")
        .release()
        .run()
        .expect("cargo builds the simulator")
        .path()
        .to_path_buf()
}

/// The provider's limits in a row: lifted (the controller's own cost shows) or the default.
#[derive(Clone, Copy, PartialEq)]
enum ProviderLimit {
    Lifted,
    Default,
}

struct Row {
    n: usize,
    limit: ProviderLimit,
    /// Whether the namespace has a budget (that fits every create).
    budget: bool,
    /// Until every object had its host id (every create answered).
    rented: Duration,
    ready: Duration,
    floor: Duration,
    /// The protocol's minimum at the same concurrency and latency (rows with the limit
    /// lifted).
    protocol: Option<Duration>,
    cpu: f64,
    peak_rss_kib: u64,
    provider: BTreeMap<String, f64>,
    kubernetes: BTreeMap<String, f64>,
}

struct Steady {
    n: usize,
    seconds: f64,
    /// Provider calls a minute by endpoint.
    by_endpoint: BTreeMap<String, f64>,
    cpu_percent: f64,
    rss_kib: u64,
}

fn spec() -> serde_json::Value {
    serde_json::json!({"packageId": "teTapaSUFq", "imageId": "507", "period": {"count": 1, "unit": "Hour"}})
}

fn object(name: &str) -> RentedHost {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHost",
        "metadata": {"name": name},
        "spec": spec(),
    }))
    .expect("a valid RentedHost")
}

fn name(i: usize) -> String {
    format!("host-{i:05}")
}

async fn namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
        .expect("a namespace");
    api.create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
}

/// The floor: N creates and N status patches at `concurrency`, by a client that does nothing
/// else; the objects are deleted afterwards (they have no finalizer).
async fn floor(client: &kube::Client, ns: &str, n: usize, concurrency: usize) -> Duration {
    namespace(client, ns).await;
    let api: Api<RentedHost> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let created = api
                    .create(&PostParams::default(), &object(&name(i)))
                    .await?;
                let status = serde_json::json!({
                    "apiVersion": "xuandashi.dev/v1alpha1",
                    "kind": "RentedHost",
                    "status": {
                        "hostId": format!("floor{i}"),
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                            "message": "floor", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                    },
                });
                let params = PatchParams::apply("bench-floor").force();
                let name = created.metadata.name.expect("a name");
                api.patch_status(&name, &params, &Patch::Apply(&status))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await
        .expect("the floor's writes");
    let took = start.elapsed();
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("floor objects deleted");
    took
}

/// The protocol floor: what the never-rent-twice protocol needs per object, and nothing
/// else, done by a bare client at the controller's concurrency against the same API server
/// and a simulator with the same latency. Objects are created as in a row (N creates at
/// `concurrency`), and each, as soon as it exists: the guarded finalizer patch, the guarded
/// `createPending` write, createRent, the guarded `hostId` write beside `one/{id}`, the
/// connection Secret beside the `Running` status apply, and one event. Statuses come from
/// the controller's own pure decision, so every write carries what the controller's does.
async fn protocol_floor(
    client: &kube::Client,
    sim_url: &str,
    ns: &str,
    n: usize,
    concurrency: usize,
) -> Duration {
    use rentedhost_operator::controller::decision;
    use rentedhost_operator::provider::{ClientSettings, CreateRent, Credentials, ProviderClient};
    namespace(client, ns).await;
    let provider = ProviderClient::new(
        ClientSettings {
            base_url: sim_url.to_string(),
            timeout: Duration::from_secs(15),
            requests_per_second: 100_000.0,
            burst: 100_000,
            concurrency,
        },
        Credentials::new("demo-account", "demo-secret"),
        None,
    );
    let provider = &provider;
    let api: Api<RentedHost> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let (api, secrets, events) = (&api, &secrets, &events);
    let merge = PatchParams::default();
    let merge = &merge;
    let (created_tx, created_rx) = tokio::sync::mpsc::channel::<RentedHost>(n.max(1));
    let start = Instant::now();
    let user = async move {
        futures::stream::iter(0..n)
            .map(|i| async move { api.create(&PostParams::default(), &object(&name(i))).await })
            .buffer_unordered(concurrency)
            .try_for_each(|obj| {
                let tx = created_tx.clone();
                async move {
                    tx.send(obj).await.expect("the protocol takes every object");
                    Ok(())
                }
            })
            .await
            .expect("the objects are created");
    };
    let protocol = tokio_stream::wrappers::ReceiverStream::new(created_rx)
        .map(|obj| async move {
            let name = obj.metadata.name.clone().expect("a name");
            let rv = |o: &RentedHost| o.metadata.resource_version.clone();
            let finalized = api
                .patch(
                    &name,
                    merge,
                    &Patch::Merge(serde_json::json!({"metadata": {
                        "finalizers": ["xuandashi.dev/release-host"],
                        "resourceVersion": rv(&obj),
                    }})),
                )
                .await?;
            let now = jiff::Timestamp::now;
            let started = now();
            let recorded =
                decision::creating(&finalized, started, started + Duration::from_secs(30));
            let guarded = |o: &RentedHost, status: &rentedhost_operator::api::RentedHostStatus| {
                Patch::Merge(serde_json::json!({
                    "metadata": {"resourceVersion": rv(o)},
                    "status": status,
                }))
            };
            let pending = api
                .patch_status(&name, merge, &guarded(&finalized, &recorded))
                .await?;
            let asked = recorded
                .create_pending
                .as_ref()
                .and_then(|p| p.request.clone());
            let request = CreateRent::of(&asked.expect("a create records its request"));
            let answer = provider.create_rent(&request, &Default::default()).await;
            let id = answer.as_ref().expect("the simulator rents").clone();
            let rented = decision::after_create(&pending, &recorded, &answer, now());
            let id_write = guarded(&pending, &rented.status);
            let (written, host) = tokio::join!(
                api.patch_status(&name, merge, &id_write),
                provider.host(&id)
            );
            let written = written?;
            let host = host.expect("one/{id}").expect("the host");
            let running = decision::after_observe(&written, &id, Some(&host), now());
            let connection: Secret = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{name}-connection")},
                "stringData": decision::connection_data(&host),
            }))
            .expect("a Secret");
            let apply = serde_json::json!({
                "apiVersion": "xuandashi.dev/v1alpha1",
                "kind": "RentedHost",
                "status": running.status,
            });
            let applied = PatchParams::apply("bench-protocol-floor").force();
            let (post, apply) = (PostParams::default(), Patch::Apply(&apply));
            let (secret, status) = tokio::join!(
                secrets.create(&post, &connection),
                api.patch_status(&name, &applied, &apply)
            );
            secret?;
            status?;
            let event: k8s_openapi::api::events::v1::Event =
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("{name}.floor")},
                    "eventTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now()),
                    "reportingController": "bench-protocol-floor",
                    "reportingInstance": "bench-protocol-floor",
                    "action": "CreateRent",
                    "reason": "Created",
                    "type": "Normal",
                    "note": format!("rented host {id}; running"),
                    "regarding": {"apiVersion": "xuandashi.dev/v1alpha1", "kind": "RentedHost",
                        "namespace": ns, "name": name, "uid": obj.metadata.uid},
                }))
                .expect("an Event");
            events.create(&PostParams::default(), &event).await?;
            Ok::<(), kube::Error>(())
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>();
    let ((), done) = tokio::join!(user, protocol);
    done.expect("the protocol floor's writes");
    let took = start.elapsed();
    // Untimed: the objects go (their finalizer first).
    futures::stream::iter(0..n)
        .map(|i| async move {
            let patch = serde_json::json!({"metadata": {"finalizers": null}});
            api.patch(&name(i), merge, &Patch::Merge(&patch)).await
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .expect("floor finalizers removed");
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("floor objects deleted");
    took
}

/// A process's CPU seconds (user + system) and peak and current RSS (KiB), from /proc.
fn usage(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (ticks(11) + ticks(12)) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    };
    (cpu, kib("VmHWM:"), kib("VmRSS:"))
}

/// The controller's `/metrics`.
async fn metrics_text(metrics_url: &str) -> String {
    reqwest::get(metrics_url)
        .await
        .expect("the controller's /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Sums of the controller's counters: provider calls by endpoint, Kubernetes requests by
/// resource and verb.
async fn counters(metrics_url: &str) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let text = metrics_text(metrics_url).await;
    let label = |labels: &str, key: &str| -> String {
        labels
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
            .map(|v| v.trim_end_matches('"').to_string())
            .unwrap_or_default()
    };
    let (mut provider, mut kubernetes) = (BTreeMap::new(), BTreeMap::new());
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((metric, labels)) = series.split_once('{') else {
            continue;
        };
        let labels = labels.trim_end_matches('}');
        let value: f64 = value.parse().unwrap_or(0.0);
        match metric {
            "rentedhost_provider_requests_total" => {
                *provider.entry(label(labels, "endpoint")).or_default() += value;
            }
            "rentedhost_kubernetes_requests_total" => {
                let key = format!("{} {}", label(labels, "resource"), label(labels, "verb"));
                *kubernetes.entry(key).or_default() += value;
            }
            _ => {}
        }
    }
    (provider, kubernetes)
}

fn per_object(counts: &BTreeMap<String, f64>, n: usize) -> BTreeMap<String, f64> {
    counts
        .iter()
        .map(|(k, v)| (k.clone(), v / n as f64))
        .collect()
}

/// Creates objects `host-00000`… `n` at `concurrency`, as a user would.
async fn create_objects(api: &Api<RentedHost>, n: usize, concurrency: usize) {
    futures::stream::iter(0..n)
        .map(|i| async move { api.create(&PostParams::default(), &object(&name(i))).await })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .expect("the objects are created");
}

struct Running {
    _simulator: Process,
    controller: Process,
    metrics_url: String,
}

/// The simulator as its own process (hosts boot at once, the row's latency), logging to
/// `log`; and its URL.
async fn simulator(settings: &Settings, log: &Path) -> (Process, String) {
    simulator_with_hosts(settings, log, 0).await
}

/// [`simulator`] whose demo account already has `hosts` running hosts.
async fn simulator_with_hosts(settings: &Settings, log: &Path, hosts: usize) -> (Process, String) {
    let sim_port = free_port();
    let simulator = Process(
        Command::new(&settings.simulator)
            .args(["--port", &sim_port.to_string()])
            .args(["--hosts", &hosts.to_string()])
            .args(["--transition-time", "1ms", "--latency", &settings.latency])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("the simulator starts"),
    );
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    wait_http(
        &format!("{sim_url}/v1/pve/open/image"),
        Duration::from_secs(60),
    )
    .await;
    (simulator, sim_url)
}

/// The simulator and the controller for one row, in namespace `ns`.
async fn start(
    plane: &ControlPlane,
    settings: &Settings,
    ns: &str,
    limit: ProviderLimit,
    logs: &Path,
    hosts: usize,
) -> Running {
    let log = |name: &str| std::fs::File::create(logs.join(format!("{ns}-{name}.log"))).unwrap();
    let sim_log = logs.join(format!("{ns}-simulator.log"));
    let (simulator, sim_url) = simulator_with_hosts(settings, &sim_log, hosts).await;

    let client = plane.client().await;
    let secrets: Api<Secret> = Api::namespaced(client, ns);
    let credentials: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench-credentials"},
        "stringData": {"uuid": "demo-account", "secret": "demo-secret"},
    }))
    .expect("a Secret");
    secrets
        .create(&PostParams::default(), &credentials)
        .await
        .expect("credentials created");

    let http_port = free_port();
    let mut controller = Command::new(&settings.operator);
    controller
        .args(["run", "--provider-url", &sim_url, "--namespace", ns])
        .args([
            "--operator-namespace",
            ns,
            "--credentials-secret",
            "bench-credentials",
        ])
        .args(["--leader-election=false", "--http-addr"])
        .arg(format!("127.0.0.1:{http_port}"))
        .args(["--concurrency", &settings.concurrency.to_string()])
        .env("KUBECONFIG", plane.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log("controller"));
    if limit == ProviderLimit::Lifted {
        controller.args(["--rate-limit", "100000", "--burst", "100000"]);
        controller.args(["--provider-concurrency", &settings.concurrency.to_string()]);
    }
    let controller = Process(controller.spawn().expect("the controller starts"));
    let base = format!("http://127.0.0.1:{http_port}");
    wait_http(&format!("{base}/readyz"), Duration::from_secs(60)).await;
    Running {
        _simulator: simulator,
        controller,
        metrics_url: format!("{base}/metrics"),
    }
}

/// A budget that fits every create of the bench (each costs a few CNY).
async fn budget(client: &kube::Client, ns: &str) {
    let budget: RentedHostBudget = serde_json::from_value(serde_json::json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHostBudget",
        "metadata": {"name": "bench"},
        "spec": {"limit": "100000000", "window": "Total"},
    }))
    .expect("a valid RentedHostBudget");
    Api::<RentedHostBudget>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &budget)
        .await
        .expect("budget created");
}

async fn row(
    plane: &ControlPlane,
    settings: &Settings,
    n: usize,
    (limit, with_budget): (ProviderLimit, bool),
    logs: &Path,
) -> (Row, Running) {
    let client = plane.client().await;
    let suffix = match (limit, with_budget) {
        (ProviderLimit::Lifted, false) => "",
        (ProviderLimit::Lifted, true) => "-budget",
        (ProviderLimit::Default, _) => "-limited",
    };
    let ns = format!("bench-{n}{suffix}");
    let (floor, protocol) = match limit {
        ProviderLimit::Lifted => {
            let floor = floor(
                &client,
                &format!("floor-{n}{suffix}"),
                n,
                settings.concurrency,
            )
            .await;
            let ns = format!("protocol-floor-{n}{suffix}");
            let (_simulator, url) =
                simulator(settings, &logs.join(format!("{ns}-simulator.log"))).await;
            let protocol = protocol_floor(&client, &url, &ns, n, settings.concurrency).await;
            (floor, Some(protocol))
        }
        // The provider's floors: N creates at 5 requests a second; and the protocol's, the
        // N creates and then one listing of their hosts (a listing begun before the last
        // create misses it), at 5 a second less the burst of 10.
        ProviderLimit::Default => {
            let calls = n + n / 25 + 1;
            let protocol = Duration::from_secs_f64((calls as f64 - 10.0).max(0.0) / 5.0);
            (Duration::from_secs_f64(n as f64 / 5.0), Some(protocol))
        }
    };
    namespace(&client, &ns).await;
    if with_budget {
        budget(&client, &ns).await;
    }
    let running = start(plane, settings, &ns, limit, logs, 0).await;
    let pid = running.controller.0.id();
    let (cpu_before, _, _) = usage(pid);

    let api: Api<RentedHost> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    let waiting = tokio::spawn({
        let (client, ns) = (client.clone(), ns.clone());
        async move { wait_all(&client, &ns, n, start, is_ready).await }
    });
    let renting = tokio::spawn({
        let (client, ns) = (client.clone(), ns.clone());
        let rented = |o: &RentedHost| o.status.as_ref().is_some_and(|s| s.host_id.is_some());
        async move { wait_all(&client, &ns, n, start, rented).await }
    });
    create_objects(&api, n, settings.concurrency).await;
    let limit_wait = Duration::from_secs(600 + n as u64 / 5);
    tokio::time::timeout(limit_wait, waiting)
        .await
        .unwrap_or_else(|_| panic!("N = {n}: not all Ready within {limit_wait:?}"))
        .expect("the watch task");
    let ready = start.elapsed();
    let rented = renting.await.expect("the watch task");
    let (cpu_after, peak_rss_kib, _) = usage(pid);
    let (provider, kubernetes) = counters(&running.metrics_url).await;
    let row = Row {
        n,
        limit,
        budget: with_budget,
        rented,
        ready,
        floor,
        protocol,
        cpu: cpu_after - cpu_before,
        peak_rss_kib,
        provider: per_object(&provider, n),
        kubernetes: per_object(&kubernetes, n),
    };
    (row, running)
}

/// The large-account row: what 100 new objects cost on an account that already has 20,000
/// hosts, at the provider's default rate limit.
struct Large {
    hosts: usize,
    n: usize,
    rented: Duration,
    ready: Duration,
    power: Duration,
    powered: usize,
    listing_age: f64,
    provider: BTreeMap<String, f64>,
}

/// A gauge of the controller's `/metrics` (0 when absent).
async fn gauge(metrics_url: &str, name: &str) -> f64 {
    let text = metrics_text(metrics_url).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `n` objects of `ns` match `done`; how long that took from `start`.
async fn wait_all(
    client: &kube::Client,
    ns: &str,
    n: usize,
    start: Instant,
    done: impl Fn(&RentedHost) -> bool,
) -> Duration {
    let api: Api<RentedHost> = Api::namespaced(client.clone(), ns);
    let mut matched = HashSet::new();
    let stream = watcher(api, watcher::Config::default()).applied_objects();
    let mut stream = std::pin::pin!(stream);
    while matched.len() < n {
        match stream.try_next().await {
            Ok(Some(obj)) if done(&obj) => {
                matched.insert(obj.metadata.name.clone().unwrap_or_default());
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the watch ended"),
            Err(error) => eprintln!("watch: {error}; retrying"),
        }
    }
    start.elapsed()
}

fn is_ready(obj: &RentedHost) -> bool {
    obj.status.as_ref().is_some_and(|s| {
        s.host_id.is_some()
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn large_account(plane: &ControlPlane, settings: &Settings, logs: &Path) -> Large {
    let (hosts, n) = (settings.large_account, settings.large_new);
    let client = plane.client().await;
    let ns = "bench-large-account";
    namespace(&client, ns).await;
    let running = start(plane, settings, ns, ProviderLimit::Default, logs, hosts).await;
    let (before, _) = counters(&running.metrics_url).await;
    let api: Api<RentedHost> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    let rented = tokio::spawn({
        let client = client.clone();
        async move {
            wait_all(&client, ns, n, start, |o| {
                o.status.as_ref().is_some_and(|s| s.host_id.is_some())
            })
            .await
        }
    });
    let ready = tokio::spawn({
        let client = client.clone();
        async move { wait_all(&client, ns, n, start, is_ready).await }
    });
    create_objects(&api, n, settings.concurrency).await;
    let limit = Duration::from_secs(900);
    let rented = tokio::time::timeout(limit, rented)
        .await
        .expect("all rented in time")
        .expect("the watch task");
    let ready = tokio::time::timeout(limit, ready)
        .await
        .expect("all Ready in time")
        .expect("the watch task");
    // A power change on a tenth of them, while the account's listing is as it is.
    let powered = (n / 10).max(1);
    let power_start = Instant::now();
    let stopped = tokio::spawn({
        let client = client.clone();
        async move {
            wait_all(&client, ns, powered, power_start, |o| {
                o.status
                    .as_ref()
                    .is_some_and(|s| s.phase == Some(rentedhost_operator::api::Phase::Stopped))
            })
            .await
        }
    });
    for i in 0..powered {
        let patch = serde_json::json!({"spec": {"powerState": "Stopped"}});
        api.patch(&name(i), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("powerState patched");
    }
    let power = tokio::time::timeout(limit, stopped)
        .await
        .expect("all stopped in time")
        .expect("the watch task");
    let listing_age = gauge(&running.metrics_url, "rentedhost_listing_age_seconds").await;
    let (after, _) = counters(&running.metrics_url).await;
    let provider = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).unwrap_or(&0.0)))
        .collect();
    Large {
        hosts,
        n,
        rented,
        ready,
        power,
        powered,
        listing_age,
        provider,
    }
}

async fn steady(running: &Running, n: usize, period: Duration) -> Steady {
    let pid = running.controller.0.id();
    let (before, _) = counters(&running.metrics_url).await;
    let (cpu_before, _, _) = usage(pid);
    let start = Instant::now();
    tokio::time::sleep(period).await;
    let seconds = start.elapsed().as_secs_f64();
    let (after, _) = counters(&running.metrics_url).await;
    let (cpu_after, _, rss_kib) = usage(pid);
    Steady {
        n,
        seconds,
        by_endpoint: after
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (v - before.get(k).unwrap_or(&0.0)) * 60.0 / seconds,
                )
            })
            .collect(),
        cpu_percent: (cpu_after - cpu_before) * 100.0 / seconds,
        rss_kib,
    }
}

fn brief(counts: &BTreeMap<String, f64>) -> String {
    let total: f64 = counts.values().sum();
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, v)| **v >= 0.005)
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect();
    format!("{total:.2} ({})", parts.join(", "))
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {:.1} GiB, Linux {}",
        memory_kib as f64 / 1048576.0,
        kernel.trim()
    )
}

fn report(
    settings: &Settings,
    rows: &[Row],
    steady: Option<&Steady>,
    large: Option<&Large>,
) -> String {
    let mut out = String::new();
    let commit = support::run_ok(Command::new("git").args(["rev-parse", "--short", "HEAD"]));
    let _ = writeln!(out, "# Benchmark: `make bench`\n");
    let _ = writeln!(
        out,
        "Machine: {}. Commit {}. Provider latency {} per call; hosts boot at once; {} reconciles at once. \
         The API-server floor is a bare kube client creating N objects and patching N statuses \
         at the same concurrency against the same API server (for the rate-limited row: N \
         creates at the provider's 5 requests/s). The protocol floor is a bare client doing the \
         protocol's minimum per object at the same concurrency, against the same API server and \
         a simulator with the same latency: the user's create, the guarded finalizer patch, the \
         guarded createPending write, createRent, the guarded hostId write beside one/{{id}}, \
         the connection Secret beside the Running status apply, one event (for the \
         rate-limited row, computed: the N creates, then one listing of their hosts, N/25 + 1 \
         pages, at 5 requests/s less the burst of 10).\n",
        machine(),
        commit.trim(),
        settings.latency,
        settings.concurrency
    );
    let _ = writeln!(
        out,
        "| N | provider limit | all rented | all Ready | API-server floor | ratio | protocol floor | ratio | CPU s | CPU ms/object | peak RSS | provider calls/object | API requests/object |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        let total: f64 = r.kubernetes.values().sum();
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} s | {:.1} s | {:.1} s | {:.2} | {} | {} | {:.1} | {:.2} | {:.1} MiB | {:.2} | {:.2} |",
            r.n,
            match (r.limit, r.budget) {
                (ProviderLimit::Lifted, false) => "lifted",
                (ProviderLimit::Lifted, true) => "lifted, a budget",
                (ProviderLimit::Default, _) => "5/s",
            },
            r.rented.as_secs_f64(),
            r.ready.as_secs_f64(),
            r.floor.as_secs_f64(),
            r.ready.as_secs_f64() / r.floor.as_secs_f64(),
            r.protocol
                .map_or("–".into(), |p| format!("{:.1} s", p.as_secs_f64())),
            r.protocol.map_or("–".into(), |p| format!(
                "{:.2}",
                r.ready.as_secs_f64() / p.as_secs_f64()
            )),
            r.cpu,
            r.cpu * 1000.0 / r.n as f64,
            r.peak_rss_kib as f64 / 1024.0,
            r.provider.values().sum::<f64>(),
            total,
        );
    }
    let _ = writeln!(
        out,
        "\nPer object, by provider endpoint and by Kubernetes resource and verb:\n"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "- N = {} ({}): provider {}; Kubernetes {}",
            r.n,
            match (r.limit, r.budget) {
                (ProviderLimit::Lifted, false) => "limit lifted",
                (ProviderLimit::Lifted, true) => "limit lifted, a budget",
                (ProviderLimit::Default, _) => "5 requests/s",
            },
            brief(&r.provider),
            brief(&r.kubernetes)
        );
    }
    for b in rows.iter().filter(|r| r.budget) {
        let Some(plain) = rows
            .iter()
            .find(|r| r.n == b.n && r.limit == b.limit && !r.budget)
        else {
            continue;
        };
        let requests = |r: &Row| r.kubernetes.values().sum::<f64>();
        let _ = writeln!(
            out,
            "\nA budget, N = {}: all Ready in {:.1} s against {:.1} s without one (ratio {:.2}); \
             CPU {:.2} against {:.2} ms/object ({:.2}); {:.2} against {:.2} Kubernetes requests \
             per object (budgets' share: {}).",
            b.n,
            b.ready.as_secs_f64(),
            plain.ready.as_secs_f64(),
            b.ready.as_secs_f64() / plain.ready.as_secs_f64(),
            b.cpu * 1000.0 / b.n as f64,
            plain.cpu * 1000.0 / plain.n as f64,
            b.cpu / plain.cpu,
            requests(b),
            requests(plain),
            brief(
                &b.kubernetes
                    .iter()
                    .filter(|(k, _)| k.starts_with("rentedhostbudgets"))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            ),
        );
    }
    if let Some(l) = large {
        let pages_per_listing = l.hosts.div_ceil(25);
        let _ = writeln!(
            out,
            "\nLarge account: {} hosts already on the account, the provider's 5 requests/s (burst 10), \
             {} objects created at once: all rented in {:.1} s ({} creates at 5/s take {:.1} s: \
             creates go before any listing page), all Ready in {:.1} s; {} power changes made \
             then were seen done in {:.1} s; listing age at the end {:.0} s (a listing is {} pages: \
             {:.0} s at the pages' share of 2.5/s, {:.0} s at the whole rate). Provider calls in \
             the row: {}.",
            l.hosts,
            l.n,
            l.rented.as_secs_f64(),
            l.n,
            l.n as f64 / 5.0,
            l.ready.as_secs_f64(),
            l.powered,
            l.power.as_secs_f64(),
            l.listing_age,
            pages_per_listing,
            pages_per_listing as f64 / 2.5,
            pages_per_listing as f64 / 5.0,
            brief(&l.provider),
        );
    }
    if let Some(s) = steady {
        let _ = writeln!(
            out,
            "\nSteady state, {} idle objects for {:.0} s (default 60 s poll, ±10 % jitter: a window \
             holds 3 or 4 polls): {} provider calls/minute, controller CPU {:.2} % of a core, RSS {:.1} MiB.",
            s.n,
            s.seconds,
            brief(&s.by_endpoint),
            s.cpu_percent,
            s.rss_kib as f64 / 1024.0
        );
    }
    out
}

#[tokio::main]
async fn main() {
    let settings = Settings::from_env();
    assert!(
        settings.operator.is_file(),
        "{} is missing: run `make release` (or set BENCH_OPERATOR)",
        settings.operator.display()
    );
    let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&logs).unwrap();
    let plane = ControlPlane::start();
    support::apply_crd(&plane);
    let mut rows = Vec::new();
    let mut steady_state = None;
    let mut plan: Vec<(usize, (ProviderLimit, bool))> = Vec::new();
    if settings.rate_limited > 0 {
        plan.push((settings.rate_limited, (ProviderLimit::Default, false)));
    }
    plan.extend(
        settings
            .sizes
            .iter()
            .map(|n| (*n, (ProviderLimit::Lifted, false))),
    );
    if settings.budgeted > 0 {
        plan.push((settings.budgeted, (ProviderLimit::Lifted, true)));
    }
    let largest = settings.sizes.iter().copied().max();
    for (n, kind) in plan {
        eprintln!(
            "bench: N = {n}{}…",
            if kind.1 { " under a budget" } else { "" }
        );
        let (row, running) = row(&plane, &settings, n, kind, &logs).await;
        eprintln!(
            "bench: N = {n}: all Ready in {:.1} s (API-server floor {:.1} s, protocol floor {:?}), CPU {:.1} s",
            row.ready.as_secs_f64(),
            row.floor.as_secs_f64(),
            row.protocol,
            row.cpu
        );
        if kind == (ProviderLimit::Lifted, false)
            && Some(n) == largest
            && !settings.steady.is_zero()
        {
            eprintln!("bench: N = {n}: idle for {:?}…", settings.steady);
            steady_state = Some(steady(&running, n, settings.steady).await);
        }
        rows.push(row);
        drop(running);
    }
    let large = match settings.large_account {
        0 => None,
        hosts => {
            eprintln!("bench: large account ({hosts} hosts)…");
            let large = large_account(&plane, &settings, &logs).await;
            eprintln!(
                "bench: large account: rented in {:.1} s, Ready in {:.1} s, power in {:.1} s",
                large.rented.as_secs_f64(),
                large.ready.as_secs_f64(),
                large.power.as_secs_f64()
            );
            Some(large)
        }
    };
    let table = report(&settings, &rows, steady_state.as_ref(), large.as_ref());
    println!("{table}");
    if let Some(path) = &settings.results {
        std::fs::write(path, &table).expect("results written");
        eprintln!("bench: wrote {}", path.display());
    }
    plane.stop();
}
