//! A real Kubernetes control plane for tests, in the manner of controller-runtime's envtest:
//! etcd, kube-apiserver and kube-controller-manager (for garbage collection) from
//! `KUBEBUILDER_ASSETS` (built by `make testenv`) on free loopback ports, generated
//! certificates, and an admin identity in `system:masters`.
//! Everything is stopped and its files removed on drop; the shared instance is stopped at
//! process exit, and its processes die with the test process even when it is killed.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

const BINARIES: [&str; 7] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "helm",
    "kube-score",
    "promtool",
];

struct Launched {
    name: &'static str,
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    child: Child,
}

pub struct ControlPlane {
    dir: Mutex<Option<tempfile::TempDir>>,
    /// Each process by name, with the program and arguments it was started with.
    processes: Mutex<Vec<Launched>>,
    assets: PathBuf,
    kubeconfig: PathBuf,
    root: PathBuf,
}

/// The directory holding the control-plane binaries; fails with instructions when missing.
pub fn assets_dir() -> PathBuf {
    let dir = match std::env::var_os("KUBEBUILDER_ASSETS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testenv/build.sh");
            let out = Command::new(&script).arg("--dir").output().unwrap_or_else(|e| {
                panic!("cannot run {}: {e}; the Go toolchain is needed to build the test control plane (run `make testenv`)", script.display())
            });
            assert!(
                out.status.success(),
                "{} --dir failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    for binary in BINARIES {
        assert!(
            dir.join(binary).is_file(),
            "{} is missing from {}: run `make testenv` to build the test control plane (needs Go >= 1.26)",
            binary,
            dir.display()
        );
    }
    dir
}

/// Whether pods run on this control plane.
#[derive(Clone, Copy)]
enum Pods {
    Never,
    OnNodes,
}

/// The control plane shared by every test of this binary (tests isolate by namespace).
pub fn shared() -> &'static ControlPlane {
    static SHARED: OnceLock<ControlPlane> = OnceLock::new();
    SHARED.get_or_init(|| {
        extern "C" fn stop_shared() {
            if let Some(plane) = SHARED.get() {
                plane.stop();
            }
        }
        let plane = ControlPlane::start();
        super::apply_crd(&plane);
        plane.start_garbage_collector();
        // SAFETY: registers a plain function; runs once at normal process exit.
        unsafe { libc::atexit(stop_shared) };
        plane
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Spawns `command` from a thread that lives as long as the process, so that
/// PR_SET_PDEATHSIG (which follows the spawning thread) kills the child only when the
/// whole test process is gone.
fn spawn_tied_to_process(mut command: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::spawn(move || {
            for (mut command, reply) in rx {
                let _ = reply.send(command.spawn());
            }
        });
        Mutex::new(tx)
    });
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send((command, reply))
        .expect("spawner thread alive");
    answer.recv().expect("spawner answered")
}

struct Pki {
    ca: String,
    serving_cert: String,
    serving_key: String,
    admin_cert: String,
    admin_key: String,
    service_account_key: String,
    service_account_pub: String,
}

fn generate_pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rentedhost-testenv-ca");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    // A leaf certificate signed by the CA: its key (PEM) and certificate (PEM).
    let leaf = |names: &[&str], subject: &[(DnType, &str)], usage| {
        let key = KeyPair::generate().unwrap();
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).unwrap();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (key.serialize_pem(), cert.pem())
    };
    let (serving_key, serving_cert) = leaf(
        &["127.0.0.1", "localhost"],
        &[(DnType::CommonName, "kube-apiserver")],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let admin_subject = [
        (DnType::CommonName, "testenv-admin"),
        (DnType::OrganizationName, "system:masters"),
    ];
    let (admin_key, admin_cert) = leaf(&[], &admin_subject, ExtendedKeyUsagePurpose::ClientAuth);

    let service_account = KeyPair::generate().unwrap();
    Pki {
        ca: ca_cert.pem(),
        serving_cert,
        serving_key,
        admin_cert,
        admin_key,
        service_account_key: service_account.serialize_pem(),
        service_account_pub: service_account.public_key_pem(),
    }
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until `/readyz` answers ok.
    pub fn start() -> ControlPlane {
        ControlPlane::start_with(Pods::Never)
    }

    fn start_with(pods: Pods) -> ControlPlane {
        let assets = assets_dir();
        let dir = tempfile::Builder::new()
            .prefix("rentedhost-testenv-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        let write = |name: &str, content: &str| {
            let path = root.join(name);
            std::fs::write(&path, content).unwrap();
            path
        };
        let pki = generate_pki();
        let ca = write("ca.crt", &pki.ca);
        let serving_cert = write("apiserver.crt", &pki.serving_cert);
        let serving_key = write("apiserver.key", &pki.serving_key);
        let admin_cert = write("admin.crt", &pki.admin_cert);
        let admin_key = write("admin.key", &pki.admin_key);
        let sa_key = write("service-account.key", &pki.service_account_key);
        let sa_pub = write("service-account.pub", &pki.service_account_pub);

        let plane = ControlPlane {
            dir: Mutex::new(Some(dir)),
            processes: Mutex::new(Vec::new()),
            kubeconfig: root.join("kubeconfig"),
            assets,
            root: root.clone(),
        };

        let etcd_port = free_port();
        let peer_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(plane.assets.join("etcd"));
        etcd.args([
            "--name=testenv",
            &format!("--data-dir={}", root.join("etcd").display()),
            &format!("--listen-client-urls={etcd_url}"),
            &format!("--advertise-client-urls={etcd_url}"),
            &format!("--listen-peer-urls={peer_url}"),
            &format!("--initial-advertise-peer-urls={peer_url}"),
            &format!("--initial-cluster=testenv={peer_url}"),
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]);
        plane.spawn("etcd", etcd);

        let port = free_port();
        let mut apiserver = Command::new(plane.assets.join("kube-apiserver"));
        apiserver.args([
            &format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            &format!("--secure-port={port}"),
            &format!("--cert-dir={}", root.join("certs").display()),
            &format!("--tls-cert-file={}", serving_cert.display()),
            &format!("--tls-private-key-file={}", serving_key.display()),
            &format!("--client-ca-file={}", ca.display()),
            &format!("--service-account-key-file={}", sa_pub.display()),
            &format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-account-issuer=https://127.0.0.1/testenv",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            "--v=1",
        ]);
        match pods {
            // No pod runs: objects need no ServiceAccount admission.
            Pods::Never => apiserver.arg("--disable-admission-plugins=ServiceAccount"),
            // Pods get their ServiceAccount's projected token; logs and exec reach the
            // kubelet at the node's InternalIP (its host name resolves nowhere).
            Pods::OnNodes => apiserver.arg("--kubelet-preferred-address-types=InternalIP"),
        };
        plane.spawn("kube-apiserver", apiserver);

        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: admin\n    namespace: default\ncurrent-context: testenv\n",
            ca.display(),
            admin_cert.display(),
            admin_key.display()
        );
        std::fs::write(&plane.kubeconfig, kubeconfig).unwrap();
        plane.wait_ready(Duration::from_secs(90));
        plane
    }

    /// Starts kube-controller-manager with its garbage collector (owner references), its
    /// namespace controller (deleting a namespace deletes what is in it) and the ClusterRole
    /// aggregation (the chart's user roles join `view` and `edit`).
    /// Start it once the CRDs are in: it discovers resource types only every 30 s.
    pub fn start_garbage_collector(&self) {
        let mut controller_manager = Command::new(self.assets.join("kube-controller-manager"));
        controller_manager.args([
            &format!("--kubeconfig={}", self.kubeconfig.display()),
            "--controllers=garbagecollector,namespace,clusterrole-aggregation",
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ]);
        self.spawn("kube-controller-manager", controller_manager);
    }

    /// A control plane for nodes (`super::node`): the API server admits pods with their
    /// ServiceAccount, kube-controller-manager runs what Deployments, evictions and tokens
    /// need, and kube-scheduler places pods.
    pub fn start_for_nodes(node_assets: &Path) -> ControlPlane {
        let plane = ControlPlane::start_with(Pods::OnNodes);
        let root = plane.root.clone();
        let mut controller_manager = Command::new(plane.assets.join("kube-controller-manager"));
        controller_manager.args([
            &format!("--kubeconfig={}", plane.kubeconfig.display()),
            "--controllers=deployment-controller,replicaset-controller,namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller,disruption-controller,pod-garbage-collector-controller,clusterrole-aggregation-controller",
            &format!("--service-account-private-key-file={}", root.join("service-account.key").display()),
            &format!("--root-ca-file={}", root.join("ca.crt").display()),
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ]);
        plane.spawn("kube-controller-manager", controller_manager);
        let mut scheduler = Command::new(node_assets.join("kube-scheduler"));
        scheduler.args([
            &format!("--kubeconfig={}", plane.kubeconfig.display()),
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ]);
        plane.spawn("kube-scheduler", scheduler);
        plane
    }

    /// The API server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        let kubeconfig = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let server = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
            .expect("the server in the kubeconfig");
        server.parse().unwrap()
    }

    fn spawn(&self, name: &'static str, mut command: Command) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("{name}.log")))
            .unwrap();
        let program = command.get_program().to_owned();
        let args = command.get_args().map(|a| a.to_owned()).collect();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child =
            spawn_tied_to_process(command).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.processes().push(Launched {
            name,
            program,
            args,
            child,
        });
    }

    /// Stops process `name` (SIGKILL, as a crash would) and starts it again with the same
    /// arguments: same ports, same data.
    pub fn restart(&self, name: &'static str) {
        let launched = {
            let mut processes = self.processes();
            let at = processes
                .iter()
                .position(|p| p.name == name)
                .expect("a process of that name");
            processes.remove(at)
        };
        let Launched {
            program,
            args,
            mut child,
            ..
        } = launched;
        let _ = child.kill();
        let _ = child.wait();
        let mut command = Command::new(program);
        command.args(args);
        self.spawn(name, command);
    }

    /// Sends `signal` to process `name` (SIGSTOP and SIGCONT pause and resume it).
    pub fn signal(&self, name: &str, signal: i32) {
        let processes = self.processes();
        let process = processes
            .iter()
            .find(|p| p.name == name)
            .expect("a process of that name");
        // SAFETY: kill(2) on a child of this process.
        let sent = unsafe { libc::kill(process.child.id() as i32, signal) };
        assert_eq!(sent, 0, "signal {signal} to {name}");
    }

    /// The last lines one of the processes logged (flag dumps left out).
    pub fn log_tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.root.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("FLAG:")).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let out = self
                .kubectl()
                .args(["get", "--raw=/readyz"])
                .output()
                .unwrap();
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return;
            }
            let exited = self
                .processes()
                .iter_mut()
                .find_map(|p| Some((p.name, p.child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                panic!("{name} exited with {status}:\n{}", self.log_tail(name));
            }
            if start.elapsed() > limit {
                panic!(
                    "kube-apiserver not ready after {limit:?}: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.log_tail("kube-apiserver")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Path of an admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Directory of this control plane's files (certificates, logs, etcd data).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Process ids of etcd, kube-apiserver (and kube-controller-manager, once started).
    pub fn pids(&self) -> Vec<u32> {
        self.processes().iter().map(|p| p.child.id()).collect()
    }

    /// The admin's client configuration (from the generated kubeconfig).
    async fn admin_config(&self) -> kube::Config {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap()
    }

    /// A kube client with the admin identity, bound to the calling test's runtime.
    pub async fn client(&self) -> kube::Client {
        let config = self.admin_config().await;
        kube::Client::try_from(config).unwrap()
    }

    /// A kube client that acts as `user` (the admin impersonating it): for what RBAC allows.
    pub async fn client_as(&self, user: &str) -> kube::Client {
        let mut config = self.admin_config().await;
        config.auth_info.impersonate = Some(user.to_string());
        kube::Client::try_from(config).unwrap()
    }

    /// An admin client whose watches run `lag` behind the API server (see `client_faults.rs`).
    pub async fn client_with_watch_lag(&self, lag: std::time::Duration) -> kube::Client {
        let config = self.admin_config().await;
        kube::client::ClientBuilder::try_from(config)
            .unwrap()
            .with_layer(&tower::layer::layer_fn(|inner| {
                super::client_faults::LaggingWatches { inner, lag }
            }))
            .build()
    }

    /// An admin client whose requests to paths containing `path` hang while `stalled` is set.
    pub async fn client_stalling(
        &self,
        path: &'static str,
        stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> kube::Client {
        let config = self.admin_config().await;
        kube::client::ClientBuilder::try_from(config)
            .unwrap()
            .with_layer(&tower::layer::layer_fn(|inner| {
                super::client_faults::Stalling {
                    inner,
                    path,
                    stalled: stalled.clone(),
                }
            }))
            .build()
    }

    /// An admin client whose `method` requests to paths containing `path` wait, while
    /// `hold` is armed, until it opens (see `client_faults::Holding`).
    pub async fn client_holding(
        &self,
        method: http::Method,
        path: &'static str,
        hold: std::sync::Arc<super::client_faults::Hold>,
    ) -> kube::Client {
        let config = self.admin_config().await;
        kube::client::ClientBuilder::try_from(config)
            .unwrap()
            .with_layer(&tower::layer::layer_fn(|inner| {
                super::client_faults::Holding {
                    inner: std::sync::Arc::new(tokio::sync::Mutex::new(inner)),
                    method: method.clone(),
                    path,
                    hold: hold.clone(),
                }
            }))
            .build()
    }

    /// `kubectl` pointed at this control plane.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.assets.join("kubectl"));
        command.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        command
    }

    /// `kubectl apply --server-side` of `manifest` (through a file, as a person would).
    pub fn apply(&self, manifest: &serde_json::Value) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), serde_json::to_string(manifest).unwrap()).unwrap();
        let mut apply = self.kubectl();
        super::run_ok(
            apply
                .args(["apply", "--server-side", "-f"])
                .arg(file.path()),
        );
    }

    /// `helm` pointed at this control plane, with its caches inside the control plane's directory.
    pub fn helm(&self) -> Command {
        let mut command = Command::new(self.assets.join("helm"));
        command
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .env("HELM_CACHE_HOME", self.root.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.root.join("helm/config"))
            .env("HELM_DATA_HOME", self.root.join("helm/data"));
        command
    }

    fn processes(&self) -> std::sync::MutexGuard<'_, Vec<Launched>> {
        self.processes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops the processes and removes the files; idempotent.
    pub fn stop(&self) {
        for mut process in self.processes().drain(..).rev() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        if let Some(dir) = self.dir.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = dir.close();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}
