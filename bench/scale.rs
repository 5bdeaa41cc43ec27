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
//! Settings (environment): `BENCH_N` (`100,1000,5000`), `BENCH_RATE_LIMITED_N` (`100`, the
//! row at the default provider rate limit; `0` leaves it out), `BENCH_LATENCY` (`50ms`),
//! `BENCH_CONCURRENCY` (`8`), `BENCH_STEADY_SECONDS` (`180`), `BENCH_OPERATOR` (the
//! release binary), `BENCH_SIMULATOR` (`xds-simulator`, built optimised), `BENCH_RESULTS` (`bench/results.md`; empty: not written).

#[allow(dead_code)]
#[path = "../tests/e2e/support/mod.rs"]
mod support;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use rentedhost_operator::api::RentedHost;
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
            rate_limited: number("BENCH_RATE_LIMITED_N", "100"),
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
    ready: Duration,
    floor: Duration,
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

/// Sums of the controller's counters: provider calls by endpoint, Kubernetes requests by
/// resource and verb.
async fn counters(metrics_url: &str) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let text = reqwest::get(metrics_url)
        .await
        .expect("the controller's /metrics")
        .text()
        .await
        .expect("metrics text");
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

/// Waits until `n` objects of `ns` have a host id and are Ready.
async fn all_ready(client: &kube::Client, ns: &str, n: usize) {
    let api: Api<RentedHost> = Api::namespaced(client.clone(), ns);
    let mut ready = HashSet::new();
    let stream = watcher(api, watcher::Config::default()).applied_objects();
    let mut stream = std::pin::pin!(stream);
    while ready.len() < n {
        let obj = match stream.try_next().await {
            Ok(Some(obj)) => obj,
            Ok(None) => panic!("the watch ended"),
            Err(error) => {
                eprintln!("watch: {error}; retrying");
                continue;
            }
        };
        let status = obj.status.as_ref();
        let rented = status.is_some_and(|s| s.host_id.is_some());
        let is_ready = status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        let name = obj.metadata.name.clone().unwrap_or_default();
        if rented && is_ready {
            ready.insert(name);
        }
    }
}

struct Running {
    _simulator: Process,
    controller: Process,
    metrics_url: String,
}

/// The simulator and the controller for one row, in namespace `ns`.
async fn start(
    plane: &ControlPlane,
    settings: &Settings,
    ns: &str,
    limit: ProviderLimit,
    logs: &Path,
) -> Running {
    let sim_port = free_port();
    let log = |name: &str| std::fs::File::create(logs.join(format!("{ns}-{name}.log"))).unwrap();
    let simulator = Process(
        Command::new(&settings.simulator)
            .args(["--port", &sim_port.to_string()])
            .args(["--transition-time", "1ms", "--latency", &settings.latency])
            .stdout(Stdio::null())
            .stderr(log("simulator"))
            .spawn()
            .expect("the simulator starts"),
    );
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    wait_http(
        &format!("{sim_url}/v1/pve/open/image"),
        Duration::from_secs(10),
    )
    .await;

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

async fn row(
    plane: &ControlPlane,
    settings: &Settings,
    n: usize,
    limit: ProviderLimit,
    logs: &Path,
) -> (Row, Running) {
    let client = plane.client().await;
    let suffix = match limit {
        ProviderLimit::Lifted => "",
        ProviderLimit::Default => "-limited",
    };
    let ns = format!("bench-{n}{suffix}");
    let floor = match limit {
        ProviderLimit::Lifted => {
            floor(&client, &format!("floor-{n}"), n, settings.concurrency).await
        }
        // The provider's floor: N creates at 5 requests a second.
        ProviderLimit::Default => Duration::from_secs_f64(n as f64 / 5.0),
    };
    namespace(&client, &ns).await;
    let running = start(plane, settings, &ns, limit, logs).await;
    let pid = running.controller.0.id();
    let (cpu_before, _, _) = usage(pid);

    let api: Api<RentedHost> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    let waiting = tokio::spawn({
        let (client, ns) = (client.clone(), ns.clone());
        async move { all_ready(&client, &ns, n).await }
    });
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &object(&name(i))).await }
        })
        .buffer_unordered(settings.concurrency)
        .try_collect::<Vec<_>>()
        .await
        .expect("the objects are created");
    let limit_wait = Duration::from_secs(600 + n as u64 / 5);
    tokio::time::timeout(limit_wait, waiting)
        .await
        .unwrap_or_else(|_| panic!("N = {n}: not all Ready within {limit_wait:?}"))
        .expect("the watch task");
    let ready = start.elapsed();
    let (cpu_after, peak_rss_kib, _) = usage(pid);
    let (provider, kubernetes) = counters(&running.metrics_url).await;
    let row = Row {
        n,
        limit,
        ready,
        floor,
        cpu: cpu_after - cpu_before,
        peak_rss_kib,
        provider: per_object(&provider, n),
        kubernetes: per_object(&kubernetes, n),
    };
    (row, running)
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

fn report(settings: &Settings, rows: &[Row], steady: Option<&Steady>) -> String {
    let mut out = String::new();
    let commit = support::run_ok(Command::new("git").args(["rev-parse", "--short", "HEAD"]));
    let _ = writeln!(out, "# Benchmark: `make bench`\n");
    let _ = writeln!(
        out,
        "Machine: {}. Commit {}. Provider latency {} per call; hosts boot at once; {} reconciles at once. \
         The floor is a bare kube client creating N objects and patching N statuses at the same \
         concurrency against the same API server (for the rate-limited row: N creates at the \
         provider's 5 requests/s).\n",
        machine(),
        commit.trim(),
        settings.latency,
        settings.concurrency
    );
    let _ = writeln!(
        out,
        "| N | provider limit | all Ready | floor | ratio | CPU s | CPU ms/object | peak RSS | provider calls/object | API requests/object |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        let total: f64 = r.kubernetes.values().sum();
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} s | {:.1} s | {:.2} | {:.1} | {:.2} | {:.1} MiB | {:.2} | {:.2} |",
            r.n,
            match r.limit {
                ProviderLimit::Lifted => "lifted",
                ProviderLimit::Default => "5/s",
            },
            r.ready.as_secs_f64(),
            r.floor.as_secs_f64(),
            r.ready.as_secs_f64() / r.floor.as_secs_f64(),
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
            match r.limit {
                ProviderLimit::Lifted => "limit lifted",
                ProviderLimit::Default => "5 requests/s",
            },
            brief(&r.provider),
            brief(&r.kubernetes)
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
    let mut plan: Vec<(usize, ProviderLimit)> = Vec::new();
    if settings.rate_limited > 0 {
        plan.push((settings.rate_limited, ProviderLimit::Default));
    }
    plan.extend(settings.sizes.iter().map(|n| (*n, ProviderLimit::Lifted)));
    let largest = settings.sizes.iter().copied().max();
    for (n, limit) in plan {
        eprintln!("bench: N = {n}…");
        let (row, running) = row(&plane, &settings, n, limit, &logs).await;
        eprintln!(
            "bench: N = {n}: all Ready in {:.1} s (floor {:.1} s), CPU {:.1} s",
            row.ready.as_secs_f64(),
            row.floor.as_secs_f64(),
            row.cpu
        );
        if limit == ProviderLimit::Lifted && Some(n) == largest && !settings.steady.is_zero() {
            eprintln!("bench: N = {n}: idle for {:?}…", settings.steady);
            steady_state = Some(steady(&running, n, settings.steady).await);
        }
        rows.push(row);
        drop(running);
    }
    let table = report(&settings, &rows, steady_state.as_ref());
    println!("{table}");
    if let Some(path) = &settings.results {
        std::fs::write(path, &table).expect("results written");
        eprintln!("bench: wrote {}", path.display());
    }
    plane.stop();
}
