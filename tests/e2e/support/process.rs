//! Processes the tests start (the simulator, the operator binary, the image): killed when
//! the test ends however it ends, and waited on over HTTP.

use super::control_plane::ControlPlane;
use super::run_ok;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The operator binary cargo built for these tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_rentedhost-operator");

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `url` answers a success.
pub async fn wait_http(url: &str, limit: Duration) {
    assert!(
        ready_within(url, limit).await,
        "{url} not ready within {limit:?}"
    );
}

/// Whether `url` answers a success within `limit`.
pub async fn ready_within(url: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The simulator's binary (`xds-simulator`, a crate of its own that the operator never
/// links), built once per test process the way cargo built these tests.
pub fn simulator_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            escargot::CargoBuild::new()
                .package("xds-simulator")
                .bin("xds-simulator")
                .current_release()
                .current_target()
                .run()
                .expect("cargo builds the simulator")
                .path()
                .to_path_buf()
        })
        .clone()
}

/// The provider simulator as its own process, and its port.
pub async fn simulator() -> (Process, u16) {
    simulator_with(None).await
}

/// The simulator answering every call after `latency` (a `--latency` value), if given.
pub async fn simulator_with(latency: Option<&str>) -> (Process, u16) {
    let port = free_port();
    let mut command = Command::new(simulator_binary());
    command.args(["--port", &port.to_string(), "--transition-time", "500ms"]);
    if let Some(latency) = latency {
        command.args(["--latency", latency]);
    }
    let process = Process(command.stderr(Stdio::null()).spawn().unwrap());
    wait_http(
        &format!("http://127.0.0.1:{port}/v1/pve/open/image"),
        Duration::from_secs(10),
    )
    .await;
    (process, port)
}

/// How many hosts the simulator's demo account holds, asked over its API.
pub async fn demo_hosts(port: u16) -> i64 {
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let credentials = serde_json::json!({"uuid": "demo-account", "secret": "demo-secret"});
    let login = http
        .post(format!("{base}/v1/auth/getToken"))
        .json(&credentials);
    let token = body(login).await["data"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mypage = format!("{base}/v1/pve/open/mypage?page=1&pageSize=25");
    let page = body(http.get(mypage).header("Finovy-Access-Token", token)).await;
    page["data"]["totalCounts"]
        .as_i64()
        .unwrap_or_else(|| panic!("{page}"))
}

async fn body(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Chart values for a release against the simulator at `sim_port`, watching `hosts`, serving
/// metrics on `http_port`, with short intervals.
pub fn chart_values(sim_port: u16, http_port: u16, hosts: &str) -> String {
    format!(
        "credentials.uuid=demo-account,credentials.secret=demo-secret,provider.url=http://127.0.0.1:{sim_port},\
         metrics.port={http_port},pollInterval=2s,fastPollInterval=500ms,createGrace=5s,watchNamespace={hosts},leaderElection.leaseDuration=4s"
    )
}

/// `helm install rho` of the chart into `ns` with `values` (the CRD is there already), and
/// the Deployment it made.
pub fn install_chart(plane: &ControlPlane, ns: &str, values: &str) -> serde_json::Value {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/rentedhost-operator");
    let mut install = plane.helm();
    install.args(["install", "rho", "--skip-crds", "-n", ns, "--set", values]);
    run_ok(install.arg(chart));
    let mut get = plane.kubectl();
    get.args([
        "get",
        "deployment/rho-rentedhost-operator",
        "-n",
        ns,
        "-o",
        "json",
    ]);
    serde_json::from_str(&run_ok(&mut get)).unwrap()
}

/// The example manifest users apply first.
pub fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rentedhost.yaml")
}

/// Deletes the example's objects from `ns`, and checks that their host was released.
pub async fn delete_example(plane: &ControlPlane, ns: &str, sim_port: u16) {
    let mut delete = plane.kubectl();
    delete.args(["delete", "-n", ns, "--timeout=60s", "-f"]);
    run_ok(delete.arg(example()));
    assert_eq!(demo_hosts(sim_port).await, 0, "the host was released");
}

/// Applies the example to `ns` and waits (a minute at most) for its object to be Ready:
/// whether it became Ready.
pub fn apply_example_until_ready(plane: &ControlPlane, ns: &str) -> bool {
    let mut apply = plane.kubectl();
    run_ok(apply.args(["apply", "-n", ns, "-f"]).arg(example()));
    let mut wait = plane.kubectl();
    wait.args([
        "wait",
        "--for=condition=Ready",
        "rh/render-01",
        "-n",
        ns,
        "--timeout=60s",
    ]);
    wait.status().unwrap().success()
}
