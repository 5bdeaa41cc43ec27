//! A cluster with nodes: the control plane for pods (`ControlPlane::start_for_nodes`) and two
//! kubelets, each with its own containerd (testenv/node/node-up.sh), so that the chart's
//! Deployment runs the way users run it: the kubelet pulls nothing (the image from
//! `make image` is imported into each node), mounts the ServiceAccount token, runs the
//! probes; the Deployment rolls, the scheduler places, evictions go through the
//! PodDisruptionBudget. Pods use the host network only (no bridge, no iptables, no
//! kube-proxy): each node has its own address on lo (198.51.100.1x), and the operator
//! reaches the API server at 127.0.0.1 through `KUBERNETES_SERVICE_HOST/PORT`.
//!
//! One such cluster per host at a time (the kubelets and their sysctls are the host's): the
//! node tests take [`NodeCluster::lock`] and run one after another. The nodes' processes are
//! not children of the test process (containerd's shims outlive their parents): they are
//! stopped by testenv/node/down.sh when the process exits (and by the next start when a
//! killed test process left them).

use super::control_plane::ControlPlane;
use super::run_ok;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tokio::sync::{Mutex, MutexGuard};

/// The nodes: name and address on lo.
pub const NODES: [(&str, &str); 2] = [
    ("testenv-node-1", "198.51.100.11"),
    ("testenv-node-2", "198.51.100.12"),
];

/// The image tags imported into every node: the image of `make image`, and the same image
/// under a second tag, which is what a `helm upgrade` to a new version changes.
pub const IMAGE_TAGS: [&str; 2] = ["0.1.0", "0.1.0-next"];

pub struct NodeCluster {
    pub plane: ControlPlane,
    /// Each node's working directory (what down.sh takes).
    workdirs: Vec<PathBuf>,
    serial: Mutex<()>,
}

fn testenv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testenv")
}

/// The node binaries' directory (testenv/build.sh --node-dir).
fn node_assets() -> PathBuf {
    let out = run_ok(Command::new(testenv().join("build.sh")).arg("--node-dir"));
    let dir = PathBuf::from(out.trim());
    assert!(
        dir.join("kubelet").is_file(),
        "{} has no kubelet: run `make testenv` (it builds the test node too)",
        dir.display()
    );
    dir
}

impl NodeCluster {
    /// The cluster, started on first use; stopped at process exit.
    pub fn get() -> &'static NodeCluster {
        static CLUSTER: OnceLock<NodeCluster> = OnceLock::new();
        CLUSTER.get_or_init(|| {
            extern "C" fn stop_cluster() {
                if let Some(cluster) = CLUSTER.get() {
                    cluster.stop();
                }
            }
            let cluster = NodeCluster::start();
            // SAFETY: registers a plain function; runs once at normal process exit.
            unsafe { libc::atexit(stop_cluster) };
            cluster
        })
    }

    fn start() -> NodeCluster {
        let nodes = node_assets();
        leftovers_of_a_killed_run();
        let plane = ControlPlane::start_for_nodes(&nodes);
        super::apply_crd(&plane);
        let started = std::time::Instant::now();
        let mut workdirs = Vec::new();
        for (name, ip) in NODES {
            // Short: containerd's shim sockets live in it (at most 42 characters).
            let dir = tempfile::Builder::new()
                .prefix("rh-node-")
                .tempdir_in("/tmp")
                .unwrap()
                .keep();
            append_leftover(&dir);
            let out = Command::new(testenv().join("node/node-up.sh"))
                .arg(&dir)
                .arg(plane.kubeconfig())
                .env("KUBEBUILDER_ASSETS", super::control_plane::assets_dir())
                .env("NODE_NAME", name)
                .env("NODE_IP", ip)
                .output()
                .unwrap();
            workdirs.push(dir.clone());
            if !out.status.success() {
                let cluster = NodeCluster {
                    plane,
                    workdirs,
                    serial: Mutex::new(()),
                };
                cluster.stop();
                panic!(
                    "node {name} did not start: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            import_operator_image(&nodes, &dir);
        }
        println!(
            "test nodes Ready {:?} after the control plane",
            started.elapsed()
        );
        NodeCluster {
            plane,
            workdirs,
            serial: Mutex::new(()),
        }
    }

    /// Node tests run one at a time (host ports, the nodes' capacity).
    pub async fn lock(&self) -> MutexGuard<'_, ()> {
        self.serial.lock().await
    }

    /// Stops the nodes (then the control plane); idempotent.
    pub fn stop(&self) {
        for dir in self.workdirs.iter().rev() {
            down(dir);
        }
        let _ = std::fs::remove_file(leftover_marker());
        self.plane.stop();
    }

    /// A node's log (kubelet or containerd), last lines.
    pub fn node_log(&self, node: usize, name: &str) -> String {
        let text = std::fs::read_to_string(self.workdirs[node].join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

fn down(dir: &Path) {
    if dir.exists() {
        let _ = Command::new(testenv().join("node/down.sh"))
            .arg(dir)
            .status();
    }
}

/// Where the node directories of a running cluster are listed, so that a test process that
/// was killed (no atexit) leaves nothing behind for the next.
fn leftover_marker() -> PathBuf {
    PathBuf::from("/tmp/rentedhost-test-nodes")
}

fn append_leftover(dir: &Path) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(leftover_marker())
    {
        let _ = writeln!(f, "{}", dir.display());
    }
}

fn leftovers_of_a_killed_run() {
    let Ok(list) = std::fs::read_to_string(leftover_marker()) else {
        return;
    };
    for dir in list.lines().filter(|l| !l.is_empty()) {
        down(Path::new(dir));
    }
    let _ = std::fs::remove_file(leftover_marker());
}

/// The image of `make image` under every tag of [`IMAGE_TAGS`], named as the CRI looks a
/// pod's `rentedhost-operator:TAG` up (docker.io/library/...).
fn import_operator_image(nodes: &Path, workdir: &Path) {
    let archive =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image/rentedhost-operator.oci.tar");
    assert!(
        archive.is_file(),
        "{}: run `make image` (make test builds it)",
        archive.display()
    );
    let socket = workdir.join("containerd/containerd.sock");
    let ctr = || {
        let mut ctr = Command::new(nodes.join("ctr"));
        ctr.arg("--address").arg(&socket).args(["-n", "k8s.io"]);
        ctr
    };
    // Named by the index's io.containerd.image.name, as the chart's image resolves.
    run_ok(ctr().args(["images", "import"]).arg(&archive));
    let [first, others @ ..] = IMAGE_TAGS;
    let name = |tag: &str| format!("docker.io/library/rentedhost-operator:{tag}");
    for tag in others {
        run_ok(ctr().args(["images", "tag", "--force", &name(first), &name(tag)]));
    }
}
