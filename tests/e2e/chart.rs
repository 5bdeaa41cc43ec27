//! The chart to the conventions of production operator charts: it lints and renders with
//! default values and with every option set, its schema refuses wrong values with a clear
//! message, kube-score finds nothing critical its values do not justify, its ServiceAccount
//! may do what the controller does and nothing more (cluster-wide and namespaced), and a CRD
//! upgrade follows the documented path.

use crate::support::control_plane::ControlPlane;
use crate::support::{install_crd, run_ok};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/rentedhost-operator")
}

fn all_options() -> PathBuf {
    chart().join("ci/all-options-values.yaml")
}

/// The objects `helm template` renders with `args`.
fn render(args: &[&str]) -> Vec<serde_json::Value> {
    let mut helm = install_crd().helm();
    helm.args(["template", "rho", "-n", "ops"])
        .arg(chart())
        .args(args);
    let yaml = run_ok(&mut helm);
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| {
            serde_yaml::from_value::<serde_json::Value>(
                serde::Deserialize::deserialize(doc).unwrap(),
            )
            .unwrap()
        })
        .filter(|o| !o.is_null())
        .collect()
}

fn kinds(objects: &[serde_json::Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    kinds
}

fn find<'a>(objects: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_chart_lints_and_renders_with_defaults_and_with_every_option() {
    let plane = install_crd();
    run_ok(plane.helm().args(["lint", "--strict"]).arg(chart()));
    run_ok(
        plane
            .helm()
            .args(["lint", "--strict", "-f"])
            .arg(all_options())
            .arg(chart()),
    );

    let defaults = render(&[]);
    assert_eq!(
        kinds(&defaults),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ],
        "no Secret without credentials, no PDB for one replica; the user roles"
    );
    let aggregated: Vec<&serde_json::Value> = defaults
        .iter()
        .filter(|o| {
            o["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
        })
        .collect();
    assert_eq!(
        aggregated.len(),
        2,
        "view (read) and edit (write) join edit"
    );
    for object in &defaults {
        let labels = &object["metadata"]["labels"];
        assert_eq!(
            labels["app.kubernetes.io/part-of"], "rentedhost-operator",
            "{object}"
        );
        assert_eq!(
            labels["app.kubernetes.io/component"], "controller",
            "{object}"
        );
    }

    let with_monitoring = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"];
    let every_but_monitoring = render(&["-f", all_options().to_str().unwrap()]);
    assert!(
        every_but_monitoring
            .iter()
            .all(|o| o["kind"] != "ServiceMonitor"),
        "no ServiceMonitor where its CRD is not served"
    );
    let options = all_options();
    let mut args = vec!["-f", options.to_str().unwrap()];
    args.extend(with_monitoring);
    let every = render(&args);
    for object in &every {
        let meta = &object["metadata"];
        assert_eq!(
            meta["labels"]["example.com/cost-center"], "render",
            "commonLabels: {object}"
        );
        assert_eq!(
            meta["labels"]["app.kubernetes.io/name"], "xds",
            "nameOverride: {object}"
        );
        let name = meta["name"].as_str().unwrap();
        // The ServiceAccount's name is a value of its own (serviceAccount.name).
        if object["kind"] != "ServiceAccount" {
            assert!(name.contains("hosts-operator"), "fullnameOverride: {name}");
        }
    }
    let deployment = find(&every, "Deployment");
    assert_eq!(
        deployment["metadata"]["annotations"]["example.com/rollout"],
        "manual"
    );
    let rules = find(&every, "PrometheusRule")["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rules.len(), 7);
    for rule in &rules {
        let expr = rule["expr"].as_str().unwrap();
        assert!(expr.contains(r#"job="hosts""#), "seriesSelector: {expr}");
        let runbook = rule["annotations"]["runbook_url"].as_str().unwrap();
        assert!(
            runbook.starts_with("https://docs.example.com/rentedhost/troubleshooting#rentedhost")
        );
    }
    assert_eq!(
        kinds(&every),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ],
        "namespaced: Roles, and the one cluster-wide read of its own CRDs"
    );
    let pod = &find(&every, "Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(
        container["image"]
            .as_str()
            .unwrap()
            .ends_with("@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for arg in [
        "--clock-skew=3s",
        "--namespace=hosts",
        "--provider-url=https://sandbox.example.com",
        "--log-format=text",
        "--default-deletion-policy=Orphan",
        "--shared-account=false",
    ] {
        assert!(args.contains(&arg), "{arg} in {args:?}");
    }
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "RUST_LOG")
    );
    let dashboard = find(&every, "ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = dashboard["data"]["rentedhost-operator.json"]
        .as_str()
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(json).expect("the dashboard is JSON");
    let queries = json.to_string();
    for metric in [
        "rentedhost_time_to_ready_seconds_bucket",
        "rentedhost_objects",
        "rentedhost_create_pending",
        "rentedhost_provider_requests_total",
        "rentedhost_prepaid_spend_total",
        "rentedhost_budget_spent",
        "rentedhost_budget_limit",
    ] {
        assert!(queries.contains(metric), "the dashboard shows {metric}");
    }
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["topologySpreadConstraints"][0]["maxSkew"], 1);
    assert_eq!(pod["terminationGracePeriodSeconds"], 45);
    assert_eq!(pod["hostNetwork"], true);
    assert!(args.contains(&"--http-addr=$(POD_IP):9090"), "{args:?}");
    assert_eq!(container["livenessProbe"]["failureThreshold"], 5);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(container.get("readinessProbe").is_none(), "disabled");
    let strategy = &find(&every, "Deployment")["spec"]["strategy"];
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 1);
    let defaults_pod = &find(&defaults, "Deployment")["spec"];
    assert_eq!(defaults_pod["strategy"]["rollingUpdate"]["maxSurge"], 1);
    let alone = render(&["--set", "leaderElection.enabled=false"]);
    let strategy = &find(&alone, "Deployment")["spec"]["strategy"];
    assert_eq!(
        strategy["type"], "Recreate",
        "no Lease: never two pods at once"
    );
    assert!(strategy.get("rollingUpdate").is_none());
    let readiness = &defaults_pod["template"]["spec"]["containers"][0]["readinessProbe"];
    assert_eq!(readiness["httpGet"]["path"], "/readyz");
    let role = every
        .iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == "hosts")
        .expect("the watched namespace's Role");
    assert!(role["rules"].to_string().contains("rentedhosts"));
    let egress = find(&every, "NetworkPolicy")["spec"]["egress"].to_string();
    for peer in ["10.96.0.1/32", "203.0.113.0/24", "53"] {
        assert!(egress.contains(peer), "{peer} in {egress}");
    }
}

#[test]
fn wrong_values_are_refused_with_the_schemas_message() {
    for (set, message) in [
        (
            "replicaCount=abc",
            "at '/replicaCount': got string, want integer",
        ),
        ("provider.rateLimit=-1", "at '/provider/rateLimit'"),
        (
            "logFormat=xml",
            "at '/logFormat': value must be one of 'json', 'text'",
        ),
        ("pollInterval=soon", "at '/pollInterval'"),
        ("strategy.type=BlueGreen", "at '/strategy/type'"),
        (
            "terminationGracePeriodSeconds=0",
            "at '/terminationGracePeriodSeconds'",
        ),
        ("image.digest=latest", "at '/image/digest'"),
        ("colour=blue", "additional properties 'colour' not allowed"),
        (
            "leaderElection.enabled=false,replicaCount=2",
            "replicaCount > 1 needs leaderElection.enabled",
        ),
    ] {
        let out = install_crd()
            .helm()
            .args(["template", "rho", "--set", set])
            .arg(chart())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(
            stderr.contains(message),
            "{set}: {message:?} not in {stderr}"
        );
    }
}

/// kube-score's critical findings on the default render, each one justified by a comment in
/// values.yaml that names kube-score.
#[test]
fn kube_score_finds_nothing_critical_that_the_values_do_not_justify() {
    let plane = install_crd();
    let rendered = run_ok(plane.helm().args(["template", "rho"]).arg(chart()));
    let mut score = Command::new(crate::support::control_plane::assets_dir().join("kube-score"));
    score.args([
        "score",
        "--kubernetes-version",
        "v1.34",
        "--output-format",
        "json",
        "-",
    ]);
    let out = crate::support::run_with_input(&mut score, &rendered);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let values = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    let justified = [
        ("container-image-pull-policy", "kube-score asks for Always"),
        ("pod-networkpolicy", "kube-score flags a pod without one"),
        (
            "container-resources",
            "kube-score flags a missing CPU limit",
        ),
    ];
    let mut critical = Vec::new();
    for object in report.as_array().unwrap() {
        for check in object["checks"].as_array().unwrap() {
            if check["skipped"] == true || check["grade"].as_i64() != Some(1) {
                continue;
            }
            let id = check["check"]["id"].as_str().unwrap().to_string();
            let summaries: Vec<String> = check["comments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["summary"].as_str().unwrap_or_default().to_string())
                .collect();
            critical.push((id, summaries));
        }
    }
    println!("kube-score critical on the default render: {critical:?}");
    for (id, summaries) in &critical {
        let Some((_, why)) = justified.iter().find(|(j, _)| j == id) else {
            panic!("kube-score: {id} is critical and not justified: {summaries:?}");
        };
        assert!(values.contains(why), "values.yaml must say why: {why}");
        if id == "container-resources" {
            assert_eq!(
                summaries,
                &["CPU limit is not set"],
                "only the CPU limit is left out"
            );
        }
    }
}

/// Every verb on every resource the controller could touch: what the chart grants must be
/// exactly what the controller uses.
const RESOURCES: [&str; 14] = [
    "rentedhosts.xuandashi.dev",
    "rentedhosts.xuandashi.dev/status",
    "secrets",
    "events.events.k8s.io",
    "events",
    "leases.coordination.k8s.io",
    "rentedhostpools.xuandashi.dev",
    "rentedhostpools.xuandashi.dev/status",
    "rentedhostpools.xuandashi.dev/scale",
    "rentedhostbudgets.xuandashi.dev",
    "rentedhostbudgets.xuandashi.dev/status",
    "configmaps",
    "pods",
    "deployments.apps",
];
const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// What the controller uses where it watches objects.
fn watched(resource: &str, verb: &str) -> bool {
    match resource {
        // Pools create and delete their children.
        "rentedhosts.xuandashi.dev" => {
            matches!(
                verb,
                "get" | "list" | "watch" | "patch" | "create" | "delete"
            )
        }
        "rentedhosts.xuandashi.dev/status" => verb == "patch",
        "rentedhostpools.xuandashi.dev" => matches!(verb, "get" | "list" | "watch"),
        "rentedhostpools.xuandashi.dev/status" => verb == "patch",
        "rentedhostbudgets.xuandashi.dev" => matches!(verb, "get" | "list" | "watch"),
        "rentedhostbudgets.xuandashi.dev/status" => verb == "patch",
        "secrets" => matches!(verb, "get" | "list" | "watch" | "create" | "patch"),
        "events.events.k8s.io" => matches!(verb, "create" | "patch"),
        _ => false,
    }
}

/// What the controller uses in its own namespace besides: the Lease, and (when it watches
/// another namespace) the default credentials Secret.
fn own(resource: &str, verb: &str, default_secret_elsewhere: bool) -> bool {
    match resource {
        "leases.coordination.k8s.io" => matches!(verb, "get" | "create" | "update"),
        "secrets" => default_secret_elsewhere && matches!(verb, "get" | "list" | "watch" | "patch"),
        _ => false,
    }
}

fn may(plane: &ControlPlane, subject: &str, ns: &str, resource: &str, verb: &str) -> bool {
    let mut can_i = plane.kubectl();
    can_i.args(["auth", "can-i", verb, "-n", ns, "--as", subject]);
    match resource.split_once('/') {
        Some((resource, sub)) => can_i.args([resource, &format!("--subresource={sub}")]),
        None => can_i.arg(resource),
    };
    let out = can_i.output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

fn assert_grants(plane: &ControlPlane, subject: &str, ns: &str, want: impl Fn(&str, &str) -> bool) {
    let mut wrong = Vec::new();
    for resource in RESOURCES {
        for verb in VERBS {
            let (has, should) = (
                may(plane, subject, ns, resource, verb),
                want(resource, verb),
            );
            if has != should {
                wrong.push((resource, verb, has));
            }
        }
    }
    // The API server's authorizer learns a new binding from its watch: a grant missing
    // just after `helm install` is asked again for a few seconds (grants only grow here).
    let start = std::time::Instant::now();
    while wrong.iter().any(|(_, _, has)| !has) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        wrong.retain(|(resource, verb, _)| {
            may(plane, subject, ns, resource, verb) != want(resource, verb)
        });
    }
    let wrong: Vec<String> = wrong
        .iter()
        .map(|(resource, verb, has)| format!("{verb} {resource} in {ns}: {has}, want {}", !has))
        .collect();
    assert!(wrong.is_empty(), "{subject}:\n{}", wrong.join("\n"));
}

/// The one cluster-wide read of either mode: the operator's own two CRDs, by name, to check
/// at start-up that they carry every field it writes.
fn assert_reads_its_crds_only(plane: &ControlPlane, subject: &str) {
    let mut wrong = Vec::new();
    for name in [
        "rentedhosts.xuandashi.dev",
        "rentedhostpools.xuandashi.dev",
        "rentedhostbudgets.xuandashi.dev",
        "certificates.cert-manager.io",
    ] {
        for verb in VERBS {
            let crd = format!("customresourcedefinitions.apiextensions.k8s.io/{name}");
            let mut can_i = plane.kubectl();
            can_i.args(["auth", "can-i", verb, &crd, "--as", subject]);
            let out = can_i.output().unwrap();
            let has = String::from_utf8_lossy(&out.stdout).trim() == "yes";
            let should = verb == "get" && name.ends_with("xuandashi.dev");
            if has != should {
                wrong.push(format!("{verb} {crd}: {has}, want {should}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{subject}:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn the_service_account_may_do_what_the_controller_does_and_no_more() {
    let plane = install_crd();
    let client = plane.client().await;
    let install = |ns: &str, extra: &str| {
        let values = format!("credentials.existingSecret=creds{extra}");
        run_ok(
            plane
                .helm()
                .args(["install", "rho", "--skip-crds", "-n", ns, "--set", &values])
                .arg(chart()),
        );
        format!("system:serviceaccount:{ns}:rho-rentedhost-operator")
    };
    let elsewhere = crate::support::test_namespace(&client, "rbac-other").await;

    // Cluster-wide: the watched resources everywhere, the Lease at home.
    let home = crate::support::test_namespace(&client, "rbac-cluster").await;
    let subject = install(&home, "");
    assert_grants(plane, &subject, &home, |r, v| {
        watched(r, v) || own(r, v, false)
    });
    assert_grants(plane, &subject, &elsewhere, watched);
    assert_reads_its_crds_only(plane, &subject);

    // Namespaced: the watched namespace only; at home the Lease and the default Secret;
    // nothing anywhere else.
    let home = crate::support::test_namespace(&client, "rbac-ns").await;
    let hosts = crate::support::test_namespace(&client, "rbac-hosts").await;
    let subject = install(&home, &format!(",watchNamespace={hosts}"));
    assert_grants(plane, &subject, &hosts, watched);
    assert_grants(plane, &subject, &home, |r, v| own(r, v, true));
    assert_grants(plane, &subject, &elsewhere, |_, _| false);
    assert_reads_its_crds_only(plane, &subject);
}

/// Helm installs `crds/` once and never upgrades it: the documented path (apply the new
/// chart's CRD server-side, then `helm upgrade`) brings a cluster with an older CRD up to
/// date. On a control plane of its own: the shared one's CRD must not change under others.
#[tokio::test]
async fn a_crd_upgrade_follows_the_documented_path() {
    let plane = ControlPlane::start();
    let crd_file = chart().join("crds/rentedhost.yaml");
    let new: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&crd_file).unwrap()).unwrap();
    // An older CRD: without spec.powerState.
    let mut old = new.clone();
    let spec = &mut old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert!(spec.as_object_mut().unwrap().remove("powerState").is_some());
    plane.apply(&old);
    let has_power_state = || {
        let crd = run_ok(plane.kubectl().args([
            "get",
            "crd",
            "rentedhosts.xuandashi.dev",
            "-o",
            "jsonpath={.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.powerState.type}",
        ]));
        !crd.trim().is_empty()
    };
    run_ok(plane.kubectl().args(["create", "namespace", "ops"]));
    let values = "credentials.existingSecret=creds";
    run_ok(
        plane
            .helm()
            .args(["install", "rho", "-n", "ops", "--set", values])
            .arg(chart()),
    );
    assert!(
        !has_power_state(),
        "helm install leaves an existing CRD alone"
    );
    run_ok(
        plane
            .helm()
            .args(["upgrade", "rho", "-n", "ops", "--set", values])
            .arg(chart()),
    );
    assert!(!has_power_state(), "and so does helm upgrade");

    // The documented path (README, "Upgrading"; the chart's NOTES).
    run_ok(
        plane
            .kubectl()
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(chart().join("crds")),
    );
    run_ok(
        plane
            .helm()
            .args(["upgrade", "rho", "-n", "ops", "--set", values])
            .arg(chart()),
    );
    assert!(has_power_state(), "the CRD is the chart's");
    run_ok(
        plane
            .kubectl()
            .args(["get", "crd", "rentedhostpools.xuandashi.dev"]),
    );
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    assert!(readme.contains(
        "kubectl apply --server-side --force-conflicts -f charts/rentedhost-operator/crds/\n"
    ));
}

/// The PrometheusRule's alerts, by `promtool test rules` (tests/prometheus/alerts.test.yaml):
/// series that fire each alert and series that must not, on the rule as the chart renders
/// it for release `rho` in namespace `ops`.
#[test]
fn the_alerts_fire_on_what_they_are_about_and_not_otherwise() {
    let rule = render(&["--set", "prometheusRule.enabled=true"])
        .into_iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let dir = tempfile::tempdir().unwrap();
    let groups = serde_json::json!({"groups": rule["spec"]["groups"]});
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&groups).unwrap(),
    )
    .unwrap();
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/prometheus/alerts.test.yaml");
    std::fs::copy(&tests, dir.path().join("alerts.test.yaml")).unwrap();
    let promtool = crate::support::control_plane::assets_dir().join("promtool");
    run_ok(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .arg(dir.path().join("rules.yaml")),
    );
    let out = run_ok(
        Command::new(&promtool)
            .args(["test", "rules"])
            .arg(dir.path().join("alerts.test.yaml")),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let alerts = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let tested = std::fs::read_to_string(&tests).unwrap();
    for alert in alerts {
        let name = alert["alert"].as_str().unwrap();
        assert!(
            tested.contains(&format!("alertname: {name}")),
            "{name} has no promtool test"
        );
        let anchor = name.to_lowercase();
        let runbook = alert["annotations"]["runbook_url"].as_str().unwrap();
        assert!(
            runbook.ends_with(&format!("troubleshooting.md#{anchor}")),
            "{runbook}"
        );
        let doc = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/troubleshooting.md"),
        )
        .unwrap();
        assert!(
            doc.contains(&format!("### {name}\n")),
            "docs/troubleshooting.md has no section {name}"
        );
    }
}
