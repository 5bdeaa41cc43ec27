//! The product as users get it: `helm install` of the chart, then the real binary run with
//! the Deployment's own arguments, as the chart's ServiceAccount, against the simulator
//! binary; a RentedHost applied with kubectl is rented, shown, and released.

use crate::support::process::{
    BINARY, Process, apply_example_until_ready, chart_values, delete_example, free_port,
    install_chart, simulator, wait_http,
};
use crate::support::{install_crd, run_ok};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn helm_install_then_the_binary_runs_as_the_charts_service_account() {
    let plane = install_crd();
    let client = plane.client().await;
    // Namespaced mode: released in `ns`, watching `hosts` only.
    let ns = crate::support::test_namespace(&client, "helm").await;
    let hosts = crate::support::test_namespace(&client, "helm-hosts").await;
    let elsewhere = crate::support::test_namespace(&client, "helm-else").await;

    let (_sim, sim_port) = simulator().await;

    let http_port = free_port();
    let values = chart_values(sim_port, http_port, &hosts);
    let deployment = install_chart(plane, &ns, &values);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
    assert_eq!(args[0], "run");
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_string();
    let subject = format!("system:serviceaccount:{ns}:{sa}");
    // tests/e2e/chart.rs asks verb by verb; here: the namespaced install reads no Secret
    // outside its namespaces.
    // A "yes" is asked again for a few seconds: the authorizer learns a new binding from
    // its watch, just after `helm install` returned.
    for (namespace, want) in [(&hosts, "yes"), (&ns, "yes"), (&elsewhere, "no")] {
        let start = std::time::Instant::now();
        loop {
            let out = plane
                .kubectl()
                .args([
                    "auth", "can-i", "get", "secrets", "-n", namespace, "--as", &subject,
                ])
                .output()
                .unwrap();
            let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if got == want || want == "no" || start.elapsed() > Duration::from_secs(5) {
                assert_eq!(got, want, "{namespace}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The chart's ServiceAccount, by impersonation, in a kubeconfig of its own.
    let admin = std::fs::read_to_string(plane.kubeconfig()).unwrap();
    let as_sa = admin.replace(
        "    client-key:",
        &format!("    as: {subject}\n    client-key:"),
    );
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(kubeconfig.path(), as_sa).unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut operator = Process(
        Command::new(BINARY)
            .args(&args)
            .env("KUBECONFIG", kubeconfig.path())
            .env("POD_NAMESPACE", &ns)
            .env("POD_NAME", "rho-rentedhost-operator-0")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    wait_http(
        &format!("http://127.0.0.1:{http_port}/readyz"),
        Duration::from_secs(20),
    )
    .await;

    assert!(
        apply_example_until_ready(plane, &hosts),
        "render-01 is not Ready"
    );
    let table = run_ok(plane.kubectl().args(["get", "rh", "-n", &hosts]));
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[2], row[3]),
        ("render-01", "Running", "True"),
        "{table}"
    );
    assert_eq!(row[1].len(), 10, "a host id in HOST: {table}");
    // The login is written beside the status that shows the host running.
    let start = Instant::now();
    let login = loop {
        let out = plane
            .kubectl()
            .args([
                "get",
                "secret",
                "render-01-connection",
                "-n",
                &hosts,
                "-o",
                "json",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            break String::from_utf8(out.stdout).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let login: k8s_openapi::api::core::v1::Secret = serde_json::from_str(&login).unwrap();
    let password = String::from_utf8(login.data.unwrap()["hostPw"].0.clone()).unwrap();
    assert_eq!(password.len(), 16);
    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"rentedhost_provider_requests_total{endpoint="createRent",code="0"} 1"#),
        "{metrics}"
    );

    // Who may spend: the chart's user roles joined the cluster's `edit` and `view`.
    for (user, role) in [("editor", "edit"), ("viewer", "view"), ("owner", "admin")] {
        run_ok(plane.kubectl().args([
            "create",
            "rolebinding",
            user,
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
            "-n",
            &hosts,
        ]));
    }
    // `resource/sub` is a subresource (kubectl reads it as a name).
    let can = |verb: &'static str, resource: &'static str, user: &'static str| {
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        let out = plane
            .kubectl()
            .args(["auth", "can-i", verb, resource, "-n", &hosts, "--as", user])
            .arg(format!("--subresource={sub}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    let start = Instant::now();
    while !can("create", "rentedhosts", "editor") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "edit never got the user roles"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(can("patch", "rentedhostpools/scale", "editor"));
    assert!(
        !can("patch", "rentedhosts/status", "editor"),
        "status is the operator's"
    );
    assert!(can("list", "rentedhosts", "viewer") && can("get", "rentedhostpools", "viewer"));
    assert!(
        !can("create", "rentedhosts", "viewer"),
        "view may not spend"
    );
    assert!(!can("delete", "rentedhosts", "viewer"));
    assert!(
        can("list", "rentedhostbudgets", "viewer") && can("get", "rentedhostbudgets", "editor")
    );
    assert!(
        !can("patch", "rentedhostbudgets", "editor")
            && !can("create", "rentedhostbudgets", "editor"),
        "a budget limits what edit spends: admin's"
    );
    assert!(
        can("create", "rentedhostbudgets", "owner") && can("patch", "rentedhostbudgets", "owner")
    );
    assert!(
        !can("patch", "rentedhostbudgets/status", "owner"),
        "status is the operator's"
    );

    delete_example(plane, &hosts, sim_port).await;

    // SIGTERM: a clean exit that releases the lease.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(operator.0.id() as i32, libc::SIGTERM) };
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = operator.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");
    let lease = run_ok(plane.kubectl().args([
        "get",
        "lease",
        "rentedhost-operator",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]));
    assert_eq!(lease.trim(), "", "the lease is released on shutdown");
    let logs = std::fs::read_to_string(log.path()).unwrap();
    assert!(logs.contains("leading"), "{logs}");
    assert!(
        !logs.contains("demo-secret") && !logs.contains(&password),
        "no secret in the logs"
    );
    run_ok(plane.helm().args(["uninstall", "rho", "-n", &ns]));
}

#[test]
fn on_a_new_cluster_the_chart_installs_the_crd() {
    let plane = crate::support::ControlPlane::start();
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/rentedhost-operator");
    let missing = plane
        .kubectl()
        .args(["get", "crd", "rentedhosts.xuandashi.dev"])
        .output()
        .unwrap();
    assert!(
        !missing.status.success(),
        "a new cluster has no RentedHost CRD"
    );
    run_ok(
        plane
            .helm()
            .args([
                "install",
                "rho",
                "-n",
                "default",
                "--set",
                "credentials.existingSecret=xds",
            ])
            .arg(&chart),
    );
    run_ok(plane.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/rentedhosts.xuandashi.dev",
    ]));
    let columns = run_ok(plane.kubectl().args([
        "get",
        "crd",
        "rentedhosts.xuandashi.dev",
        "-o",
        "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
    ]));
    assert_eq!(
        columns,
        "Host Phase Ready Reason Expires Prepaid Age Package"
    );
    run_ok(plane.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/rentedhostpools.xuandashi.dev",
        "crd/rentedhostbudgets.xuandashi.dev",
    ]));
    let created = plane
        .kubectl()
        .args([
            "get",
            "secret",
            "rho-rentedhost-operator-credentials",
            "-n",
            "default",
        ])
        .output()
        .unwrap();
    assert!(
        !created.status.success(),
        "with existingSecret the chart creates no credentials Secret"
    );
}

/// `--version` names the version and the commit the binary was built from.
#[test]
fn the_binary_names_its_version_and_commit() {
    let out = std::process::Command::new(BINARY)
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let commit = String::from_utf8_lossy(&commit.stdout);
    assert!(
        version.starts_with(&format!(
            "rentedhost-operator {} (commit {}",
            env!("CARGO_PKG_VERSION"),
            commit.trim()
        )),
        "{version}"
    );
}
