//! An upgrade that skipped the CRD step (issue 22, finding 6): the operator binary against a
//! control plane of its own whose CRDs are missing or older than the binary. It waits, says
//! why (ERROR with the command that fixes it, `/readyz`, an event on each object), stops at
//! once on SIGTERM, and carries on as soon as the CRDs are applied.

use crate::support::process::{BINARY, Process, free_port, simulator};
use crate::support::{ControlPlane, run_ok};
use kube::api::{Api, PostParams};
use rentedhost_operator::api::RentedHost;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn crd_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crds")
        .join(name)
}

/// The operator binary as the chart runs it, leader election included, logging JSON to
/// `log`.
fn operator(plane: &ControlPlane, ns: &str, sim_port: u16, http_port: u16, log: &Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    Process(
        Command::new(BINARY)
            .args([
                "--log-format",
                "json",
                "run",
                "--provider-url",
                &format!("http://127.0.0.1:{sim_port}"),
                "--namespace",
                ns,
                "--operator-namespace",
                ns,
                "--credentials-secret",
                "creds",
                "--http-addr",
                &format!("127.0.0.1:{http_port}"),
                "--lease-duration",
                "4s",
            ])
            .env("KUBECONFIG", plane.kubeconfig())
            .env("POD_NAME", "rho-0")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// `/readyz` once it answers: its status and body.
async fn readyz(http_port: u16) -> (u16, String) {
    let url = format!("http://127.0.0.1:{http_port}/readyz");
    let start = Instant::now();
    loop {
        if let Ok(answer) = reqwest::get(&url).await {
            return (answer.status().as_u16(), answer.text().await.unwrap());
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{url} never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `/readyz` says `want` (status, and a text in the body).
async fn readyz_says(http_port: u16, status: u16, text: &str) -> String {
    let start = Instant::now();
    loop {
        let (code, body) = readyz(http_port).await;
        if code == status && body.contains(text) {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/readyz: {code} {body:?}, not {status} with {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sigterm_and_wait(process: &mut Process) -> Duration {
    let start = Instant::now();
    // SAFETY: a plain signal to a child of this process.
    unsafe { libc::kill(process.0.id() as i32, libc::SIGTERM) };
    loop {
        if process.0.try_wait().unwrap().is_some() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the operator did not exit within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_missing_crd_is_said_and_sigterm_still_ends_the_operator_at_once() {
    rentedhost_operator::provider::install_crypto_provider();
    let plane = ControlPlane::start();
    // Only the RentedHost CRD, as after an upgrade that skipped the step.
    run_ok(
        plane
            .kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(crd_file("rentedhost.yaml")),
    );
    run_ok(plane.kubectl().args(["create", "namespace", "ops"]));
    let (_sim, sim_port) = simulator().await;
    let http_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("operator.log");
    let mut process = operator(&plane, "ops", sim_port, http_port, &log);
    let body = readyz_says(
        http_port,
        503,
        "rentedhostpools.xuandashi.dev is not installed",
    )
    .await;
    assert!(body.contains("kubectl apply --server-side"), "{body}");
    let logged = std::fs::read_to_string(&log).unwrap();
    let error = logged
        .lines()
        .find(|l| l.contains("\"level\":\"ERROR\"") && l.contains("rentedhostpools.xuandashi.dev"))
        .unwrap_or_else(|| panic!("no ERROR naming the CRD: {logged}"));
    assert!(
        error.contains("kubectl apply --server-side --force-conflicts"),
        "{error}"
    );
    let took = sigterm_and_wait(&mut process);
    println!("SIGTERM to exit with a CRD missing: {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // A replica the served CRDs do not fit never takes the Lease (from an older leader
    // that still serves the objects, in an upgrade whose CRD step was skipped).
    let leases = plane
        .kubectl()
        .args(["get", "leases", "-n", "ops", "-o", "name"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&leases.stdout).trim(),
        "",
        "no Lease taken"
    );
}

#[tokio::test]
async fn an_outdated_crd_is_refused_until_the_new_one_is_applied() {
    rentedhost_operator::provider::install_crypto_provider();
    let plane = ControlPlane::start();
    // The RentedHost CRD of an older release: without the fields of later ones.
    let current: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(crd_file("rentedhost.yaml")).unwrap())
            .unwrap();
    let mut old = current.clone();
    let status = &mut old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"];
    let fields = status.as_object_mut().unwrap();
    assert!(fields.remove("lastRebootRequest").is_some());
    assert!(fields.remove("lastRetryRequest").is_some());
    assert!(fields.remove("deletionPolicy").is_some());
    plane.apply(&old);
    run_ok(
        plane
            .kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(crd_file("rentedhostpool.yaml")),
    );
    run_ok(plane.kubectl().args(["create", "namespace", "ops"]));
    run_ok(plane.kubectl().args([
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "ops",
        "--from-literal=uuid=demo-account",
        "--from-literal=secret=demo-secret",
    ]));
    let (_sim, sim_port) = simulator().await;
    let http_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("operator.log");
    let _process = operator(&plane, "ops", sim_port, http_port, &log);
    let body = readyz_says(http_port, 503, "status.lastRebootRequest").await;
    for field in ["status.deletionPolicy", "status.lastRetryRequest"] {
        assert!(body.contains(field), "{body}");
    }
    // An object applied meanwhile is not reconciled, and is told why.
    let client = plane.client().await;
    let api: Api<RentedHost> = Api::namespaced(client.clone(), "ops");
    let obj: RentedHost = serde_json::from_value(serde_json::json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHost",
        "metadata": {"name": "rh"},
        "spec": crate::support::operator::demo_spec(),
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let start = Instant::now();
    loop {
        let events = run_ok(plane.kubectl().args([
            "get",
            "events",
            "-n",
            "ops",
            "--field-selector",
            "reason=CRDOutdated",
            "-o",
            "name",
        ]));
        if !events.trim().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no CRDOutdated event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        api.get("rh").await.unwrap().status.is_none(),
        "nothing is written with fields the API server would drop"
    );
    // The documented fix: the operator carries on by itself.
    run_ok(
        plane
            .kubectl()
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/rentedhost-operator/crds")),
    );
    readyz_says(http_port, 200, "ok").await;
    let start = Instant::now();
    while api
        .get("rh")
        .await
        .unwrap()
        .status
        .and_then(|s| s.host_id)
        .is_none()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not rented after the fix"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
