//! Proves the test control plane is the real thing: version, CRD install, watch, status
//! subresource, server-side schema validation, and clean teardown.

use crate::support::{self, ControlPlane, run_ok};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use rentedhost_operator::api::{RentedHost, RentedHostStatus};
use std::process::Command;
use std::time::Duration;

fn expected_kubernetes_version() -> String {
    let gomod = include_str!("../../testenv/kubernetes/go.mod");
    let line = gomod
        .lines()
        .find(|l| l.trim_start().starts_with("k8s.io/kubernetes "))
        .expect("testenv/kubernetes/go.mod requires k8s.io/kubernetes");
    line.split_whitespace().nth(1).unwrap().to_string()
}

#[tokio::test]
async fn apiserver_and_kubectl_report_the_pinned_version() {
    let plane = support::shared();
    let client = plane.client().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, expected_kubernetes_version());
    let kubectl = run_ok(plane.kubectl().args(["version", "--client", "-o", "json"]));
    let kubectl: serde_json::Value = serde_json::from_str(&kubectl).unwrap();
    assert_eq!(
        kubectl["clientVersion"]["gitVersion"],
        expected_kubernetes_version()
    );
    let helm = run_ok(
        plane
            .helm()
            .args(["list", "--all-namespaces", "-o", "json"]),
    );
    let releases: serde_json::Value = serde_json::from_str(&helm).unwrap();
    assert!(
        releases.is_array(),
        "helm reaches the API server and lists releases: {helm}"
    );
    let readyz = client
        .request_text(
            http::Request::get("/readyz?verbose")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(readyz.contains("[+]etcd ok"), "{readyz}");
}

#[tokio::test]
async fn crd_objects_are_watched_status_patched_and_validated() {
    let plane = support::install_crd();
    let client = plane.client().await;
    let ns = support::test_namespace(&client, "harness").await;
    let api: Api<RentedHost> = Api::namespaced(client.clone(), &ns);

    let mut events = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();

    let manifest = r#"
apiVersion: xuandashi.dev/v1alpha1
kind: RentedHost
metadata:
  name: render-01
spec:
  packageId: teTapaSUFq
  imageId: "507"
  period: {count: 5, unit: Month}
"#;
    let out = support::kubectl_apply(plane, &ns, manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let seen = tokio::time::timeout(Duration::from_secs(30), events.try_next())
        .await
        .expect("watch event within 30 s")
        .unwrap()
        .unwrap();
    assert_eq!(seen.metadata.name.as_deref(), Some("render-01"));
    // Defaults come from the schema, applied by the API server; the deletion policy has
    // none there (the operator's default applies, shown in status.deletionPolicy).
    assert_eq!(
        serde_json::to_value(seen.spec.power_state).unwrap(),
        "Running"
    );
    assert_eq!(
        serde_json::to_value(seen.spec.management_policy).unwrap(),
        "Full"
    );
    assert_eq!(seen.spec.deletion_policy, None);

    let status = serde_json::json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHost",
        "status": RentedHostStatus { host_id: Some("dyMFQQgHIW".into()), ..Default::default() },
    });
    api.patch_status(
        "render-01",
        &PatchParams::apply("harness-test").force(),
        &Patch::Apply(&status),
    )
    .await
    .unwrap();
    let got = api.get("render-01").await.unwrap();
    assert_eq!(
        got.status.as_ref().unwrap().host_id.as_deref(),
        Some("dyMFQQgHIW")
    );
    // A status write through the main resource is ignored: status belongs to the subresource.
    let mut spec_only = got.clone();
    spec_only.status = Some(RentedHostStatus {
        host_id: Some("other".into()),
        ..Default::default()
    });
    spec_only.metadata.managed_fields = None;
    let replaced = api
        .replace("render-01", &PostParams::default(), &spec_only)
        .await
        .unwrap();
    assert_eq!(
        replaced.status.unwrap().host_id.as_deref(),
        Some("dyMFQQgHIW")
    );

    let invalid = manifest
        .replace("render-01", "render-02")
        .replace("count: 5", "count: 0");
    let out = support::kubectl_apply(plane, &ns, &invalid);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("spec.period.count") && stderr.contains("greater than or equal to 1"),
        "{stderr}"
    );
    assert!(api.get_opt("render-02").await.unwrap().is_none());
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn a_dropped_control_plane_stops_and_removes_its_files_even_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let plane = ControlPlane::start();
        let out = Command::new("true").status().unwrap();
        tx.send((plane.pids(), plane.root().to_path_buf())).unwrap();
        assert!(
            !out.success(),
            "deliberate panic while the control plane runs"
        );
    })
    .join();
    assert!(panicked.is_err());
    let (pids, root) = rx.recv().unwrap();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(
            !process_alive(pid),
            "process {pid} outlived its control plane"
        );
    }
    assert!(!root.exists(), "{} was not removed", root.display());
}
