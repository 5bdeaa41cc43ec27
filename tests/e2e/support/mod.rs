//! Shared support for the end-to-end tests: the control plane and small helpers.

pub mod client_faults;
pub mod control_plane;
pub mod logs;
pub mod node;
pub mod operator;
pub mod process;

pub use control_plane::{ControlPlane, shared};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use std::path::Path;
use std::process::Command;

/// Runs a command and returns its stdout, failing the test with its stderr otherwise.
pub fn run_ok(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `command` with `input` on its standard input; its output, whatever the exit.
pub fn run_with_input(command: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `kubectl apply` of a manifest given as text, in a namespace.
pub fn kubectl_apply(
    plane: &ControlPlane,
    namespace: &str,
    manifest: &str,
) -> std::process::Output {
    let mut apply = plane.kubectl();
    apply.args(["apply", "-n", namespace, "-f", "-"]);
    run_with_input(&mut apply, manifest)
}

/// A Role named `user` of `rules` (the YAML of its rule list) and the RoleBinding that grants
/// it to the user `user`, as one manifest.
pub fn role_for_user(user: &str, rules: &str) -> String {
    format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {user}}}
rules:
{rules}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {user}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {user}}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
"#
    )
}

/// Applies the checked-in CRDs with kubectl and waits until they are established.
pub fn apply_crd(plane: &ControlPlane) {
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    run_ok(
        plane
            .kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(&crds),
    );
    run_ok(plane.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/rentedhosts.xuandashi.dev",
        "crd/rentedhostpools.xuandashi.dev",
        "crd/rentedhostbudgets.xuandashi.dev",
    ]));
}

/// The shared control plane, which has the CRD installed (before its garbage collector
/// started, so that owner references to RentedHosts are collected from the start).
pub fn install_crd() -> &'static ControlPlane {
    shared()
}

/// Creates a fresh namespace for one test.
pub async fn test_namespace(client: &kube::Client, prefix: &str) -> String {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.generate_name = Some(format!("{prefix}-"));
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    created.metadata.name.unwrap()
}

/// Polls `probe` every 100 ms until it gives `Ok`, failing with `what` and its last `Err`
/// after `limit`. What a background task writes (events, metrics from the operator's cache,
/// a Secret written beside a status) is awaited this way, never read at a fixed moment.
pub async fn eventually<T, Fut>(
    limit: std::time::Duration,
    what: &str,
    mut probe: impl FnMut() -> Fut,
) -> T
where
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = std::time::Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if start.elapsed() >= limit => panic!("{what} within {limit:?}: {last}"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}
