//! What users see through kubectl: invalid manifests refused by the API server with the
//! field named, immutability once rented, printer columns and `kubectl explain`.

use crate::support::operator::{World, demo_spec, host_id, is};
use crate::support::{install_crd, run_ok};
use std::process::Output;
use std::time::Duration;

fn kubectl_apply(ns: &str, manifest: &str) -> Output {
    crate::support::kubectl_apply(install_crd(), ns, manifest)
}

fn manifest(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: xuandashi.dev/v1alpha1\nkind: RentedHost\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

const VALID: &str =
    "  packageId: teTapaSUFq\n  imageId: \"507\"\n  period:\n    count: 5\n    unit: Month\n";

fn accepted(ns: &str, name: &str, spec: &str) {
    let out = kubectl_apply(ns, &manifest(name, spec));
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn refused(ns: &str, name: &str, spec: &str, expected: &[&str]) {
    let out = kubectl_apply(ns, &manifest(name, spec));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{name} was accepted");
    for text in expected {
        assert!(stderr.contains(text), "{name}: {text:?} not in {stderr}");
    }
}

#[tokio::test]
async fn invalid_manifests_are_refused_naming_the_field() {
    let plane = install_crd();
    let client = plane.client().await;
    let ns = crate::support::test_namespace(&client, "invalid").await;
    let count_zero = VALID.replace("count: 5", "count: 0");
    let fortnight = VALID.replace("unit: Month", "unit: Fortnight");
    let no_image = VALID.replace("  imageId: \"507\"\n", "");
    let empty_package = VALID.replace("teTapaSUFq", "\"\"");
    let unknown_field = format!("{VALID}  colour: blue\n");
    let bad_policy = format!("{VALID}  deletionPolicy: Shred\n");
    let six_fallbacks = format!("{VALID}  fallbackPackageIds: [a, b, c, d, e, f]\n");
    let dotted_fallback = format!("{VALID}  fallbackPackageIds: [kQvBmLtRzA, \"pkg.2\"]\n");
    let cases: [(&str, &str, &[&str]); 8] = [
        (
            "count-zero",
            &count_zero,
            &["spec.period.count", "greater than or equal to 1"],
        ),
        (
            "fortnight",
            &fortnight,
            &["spec.period.unit", "Unsupported value: \"Fortnight\""],
        ),
        ("no-image", &no_image, &["spec.imageId", "Required value"]),
        (
            "empty-package",
            &empty_package,
            &["spec.packageId", "at least 1"],
        ),
        (
            "unknown-field",
            &unknown_field,
            &["unknown field \"spec.colour\""],
        ),
        (
            "bad-policy",
            &bad_policy,
            &["spec.deletionPolicy", "Unsupported value"],
        ),
        (
            "six-fallbacks",
            &six_fallbacks,
            &["spec.fallbackPackageIds", "must have at most 5 items"],
        ),
        (
            "dotted-fallback",
            &dotted_fallback,
            &["spec.fallbackPackageIds", "only letters, digits"],
        ),
    ];
    for (name, spec, expected) in cases {
        refused(&ns, name, spec, expected);
    }
    let listed = run_ok(plane.kubectl().args(["get", "rh", "-n", &ns, "-o", "name"]));
    assert!(
        listed.trim().is_empty(),
        "nothing invalid was stored: {listed}"
    );
    accepted(&ns, "valid", VALID);
}

#[tokio::test]
async fn a_rented_hosts_package_image_and_period_are_immutable() {
    let world = World::start("immutable", |_| {}).await;
    accepted(&world.ns, "rh", VALID);
    let obj = world
        .wait_for("rh", Duration::from_secs(30), "ready", |o| {
            is(o, "Ready", "True", "Running")
        })
        .await;
    let id = host_id(&obj).unwrap();
    for (changed, field) in [
        (VALID.replace("teTapaSUFq", "kQvBmLtRzA"), "spec.packageId"),
        (VALID.replace("\"507\"", "\"508\""), "spec.imageId"),
        (VALID.replace("count: 5", "count: 6"), "spec.period"),
        (
            format!("{VALID}  fallbackPackageIds: [kQvBmLtRzA]\n"),
            "spec.fallbackPackageIds",
        ),
    ] {
        refused(
            &world.ns,
            "rh",
            &changed,
            &[field, "immutable once a host is rented"],
        );
    }
    // Fields that may change still can.
    accepted(
        &world.ns,
        "rh",
        &format!("{VALID}  deletionPolicy: Orphan\n"),
    );
    // Once rented, spec.hostId can only name that host, and once set it is immutable.
    refused(
        &world.ns,
        "rh",
        &format!("{VALID}  hostId: someOtherHost\n"),
        &["spec.hostId", "must name the host already rented"],
    );
    let adopted = format!("{VALID}  hostId: {id}\n");
    accepted(&world.ns, "rh", &adopted);
    refused(
        &world.ns,
        "rh",
        &format!("{VALID}  hostId: other\n"),
        &["spec.hostId", "immutable once the host is adopted"],
    );
}

#[tokio::test]
async fn kubectl_get_shows_host_phase_and_ready_and_explain_documents_the_spec() {
    let world = World::start("columns", |_| {}).await;
    world.create("render-01", demo_spec()).await;
    let obj = world
        .wait_for("render-01", Duration::from_secs(30), "ready", |o| {
            is(o, "Ready", "True", "Running")
        })
        .await;
    let id = host_id(&obj).unwrap();
    let plane = install_crd();
    let table = run_ok(plane.kubectl().args(["get", "rh", "-n", &world.ns]));
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "HOST", "PHASE", "READY", "REASON", "EXPIRES", "PREPAID", "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..5],
        ["render-01", id.as_str(), "Running", "True", "Running"]
    );
    assert!(
        row[5].starts_with("20"),
        "EXPIRES is an RFC 3339 time: {table}"
    );
    // The demo package: 2.5 an hour at a 0.8 discount, for 5 months of 720 hours.
    assert_eq!(row[6], "7200", "PREPAID: {table}");
    // Both kinds answer to their category.
    let all = run_ok(
        plane
            .kubectl()
            .args(["get", "xuandashi", "-n", &world.ns, "-o", "name"]),
    );
    assert_eq!(all.trim(), "rentedhost.xuandashi.dev/render-01", "{all}");
    let price = run_ok(plane.kubectl().args(["explain", "rentedhost.status.price"]));
    assert!(price.contains("CNY") && price.contains("amount"), "{price}");
    let explain = run_ok(plane.kubectl().args(["explain", "rentedhost.spec"]));
    for field in [
        "packageId",
        "imageId",
        "period",
        "deletionPolicy",
        "managementPolicy",
        "powerState",
        "hostId",
        "connectionSecretName",
        "credentialsSecretRef",
    ] {
        assert!(
            explain.contains(field),
            "{field} missing from kubectl explain: {explain}"
        );
    }
    assert!(explain.contains("Host configuration to rent"), "{explain}");
    let top = run_ok(plane.kubectl().args(["explain", "rentedhost"]));
    assert!(
        top.contains("A prepaid host rented from the Xuandashi cloud")
            && !top.contains("Auto-generated"),
        "{top}"
    );
    let period = run_ok(
        plane
            .kubectl()
            .args(["explain", "rentedhost.spec.period.unit"]),
    );
    assert!(
        period.contains("Hour, Day, Week, Month, Quarter or Year"),
        "{period}"
    );
}

/// Issue 22, finding 2: `ID.`, `ID` + a zero-width space and `/ID` used to be accepted and
/// sent as `ID` (the client dropped what a path cannot carry), taking over the object that
/// owns host `ID`. The API server now refuses every id outside the provider's alphabet.
#[tokio::test]
async fn ids_with_a_stray_character_are_refused_naming_the_field() {
    let plane = install_crd();
    let client = plane.client().await;
    let ns = crate::support::test_namespace(&client, "stray-id").await;
    let message = "may hold only letters, digits, '-' and '_'";
    for (name, id) in [
        ("dot", "ID."),
        ("zero-width", "ID\u{200b}"),
        ("slash", "/ID"),
        ("space", " ID"),
        ("fullwidth", "\u{ff29}D"),
    ] {
        refused(
            &ns,
            name,
            &format!("{VALID}  hostId: \"{id}\"\n"),
            &["spec.hostId", message],
        );
    }
    refused(
        &ns,
        "package-dot",
        &VALID.replace("teTapaSUFq", "teTapaSUFq."),
        &["spec.packageId", message],
    );
    refused(
        &ns,
        "image-slash",
        &VALID.replace("\"507\"", "\"507/\""),
        &["spec.imageId", message],
    );
    let listed = run_ok(plane.kubectl().args(["get", "rh", "-n", &ns, "-o", "name"]));
    assert!(listed.trim().is_empty(), "nothing was stored: {listed}");
    accepted(&ns, "plain", &format!("{VALID}  hostId: dyMF-QQg_HIW9\n"));
}

/// Applying the CRDs prints no warning (a schema format the API server does not know, such
/// as schemars' `uint32`, used to make it warn).
#[tokio::test]
async fn the_crds_apply_without_warnings() {
    let plane = install_crd();
    // The API server warns about a schema only when it creates the CRD, and the shared
    // control plane already has these: dry-run them under a group of their own.
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let fresh = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&crds).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let renamed = text.replace("xuandashi.dev", "warnings.xuandashi.dev");
        std::fs::write(fresh.path().join(path.file_name().unwrap()), renamed).unwrap();
    }
    let out = plane
        .kubectl()
        .args(["create", "--dry-run=server", "-f"])
        .arg(fresh.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("Warning"), "{stderr}");
}
