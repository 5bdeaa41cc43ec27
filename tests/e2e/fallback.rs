//! Fallback packages: a create that meets 6002 asks for the next of
//! `spec.fallbackPackageIds`, and one that meets 7005 skips the package; the package asked
//! for is the one recorded, paired, priced and shown.

use crate::support::operator::{World, demo_spec, host_id};
use crate::support::{install_crd, run_ok};
use rentedhost_operator::api::RentedHost;
use std::time::Duration;
use xds_simulator::{Endpoint, Fault};

const LIMIT: Duration = Duration::from_secs(30);
/// The demo package (RTX 4090, ceph) and a smaller one of the same type.
const A: &str = "teTapaSUFq";
const B: &str = "kQvBmLtRzA";
/// A package of another type than image 507 (ceph): createRent answers 7005.
const OTHER_TYPE: &str = "pLnBaRexWq";

fn spec(package: &str, fallbacks: &[&str]) -> serde_json::Value {
    let mut spec = demo_spec();
    spec["packageId"] = package.into();
    spec["fallbackPackageIds"] = fallbacks.into();
    spec
}

/// The package of the simulator's host `id`.
fn package_of(world: &World, id: &str) -> String {
    let state = world.sim.state();
    state.hosts[id].package_id.clone()
}

fn status(obj: &RentedHost) -> rentedhost_operator::api::RentedHostStatus {
    obj.status.clone().unwrap_or_default()
}

#[tokio::test]
async fn package_a_at_capacity_rents_package_b_with_one_6002() {
    let world = World::start("fallback", |_| {}).await;
    world.sim.set_capacity(A, 0);
    world.create("rh", spec(A, &[B])).await;
    let obj = world.wait_rented("rh", LIMIT).await;
    let id = host_id(&obj).unwrap();
    assert_eq!(world.sim.host_ids(), vec![id.clone()]);
    assert_eq!(package_of(&world, &id), B);
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        2,
        "one 6002 for A, one success for B"
    );
    let obj = world
        .wait_for("rh", LIMIT, "B's price", |o| {
            status(o).price.is_some_and(|p| p.prepaid_total == "1440")
        })
        .await;
    // B: 0.4 CNY an hour × 720 hours × 5 months.
    let s = status(&obj);
    assert_eq!(s.package_id.as_deref(), Some(B));
    assert_eq!(s.price.unwrap().hourly, "0.4");
    assert_eq!(s.create_attempts, Some(2));
    let reasons = world.wait_events("rh", "Created", 1).await;
    let refused: Vec<_> = reasons
        .iter()
        .filter(|r| *r == "InsufficientResources")
        .collect();
    assert_eq!(refused.len(), 1, "{reasons:?}");
    let events = world.events("rh").await;
    let told = events
        .iter()
        .filter_map(|e| e.message.as_deref())
        .any(|n| n.contains(&format!("package {A}")) && n.contains(&format!("package {B} next")));
    assert!(told, "the 6002 event names both packages: {events:?}");
    // `kubectl get -o wide` shows the package rented.
    let wide = run_ok(
        install_crd()
            .kubectl()
            .args(["get", "rh", "rh", "-n", &world.ns, "-o", "wide"]),
    );
    let header = wide.lines().next().unwrap();
    assert!(header.contains("PACKAGE"), "{wide}");
    assert!(wide.lines().nth(1).unwrap().contains(B), "{wide}");
    // Once every package is tried the create backs off and starts again from the first.
    world.sim.set_capacity(B, 0);
    world.create("rh2", spec(A, &[B])).await;
    world.wait_calls(Endpoint::CreateRent, 2 + 4).await;
    let asked = world.sim.state().create_requests.clone();
    let packages: Vec<&str> = asked[2..6].iter().map(|r| r.package_id.as_str()).collect();
    assert_eq!(packages, [A, B, A, B], "in turn, from the first again");
    let times = world.sim.call_times(Endpoint::CreateRent);
    assert!(
        times[4] - times[3] >= Duration::from_millis(500),
        "a backoff (30 s at 1/50) after the last package: {:?}",
        times[4] - times[3]
    );
    assert!(
        times[3] - times[2] < times[4] - times[3],
        "no backoff between packages"
    );
}

#[tokio::test]
async fn a_lost_answer_while_asking_for_b_is_paired_with_bs_host() {
    let world = World::start("fallback-lost", |_| {}).await;
    world.sim.set_capacity(A, 0);
    // The first call (A) answers 6002; the second (B) rents, and its answer is lost.
    world.sim.inject(
        Endpoint::CreateRent,
        [Fault::Latency(Duration::ZERO), Fault::DropAfterCommit],
    );
    world.create("rh", spec(A, &[B])).await;
    let pending = world
        .wait_for("rh", LIMIT, "a pending create asking for B", |o| {
            status(o)
                .create_pending
                .and_then(|p| p.request)
                .is_some_and(|r| r.package_id == B)
        })
        .await;
    assert!(host_id(&pending).is_none());
    let obj = world.rented_after("rh", 2).await;
    let id = host_id(&obj).unwrap();
    assert_eq!(package_of(&world, &id), B, "B's host, never A's");
    assert_eq!(world.sim.host_ids(), vec![id]);
    assert_eq!(status(&obj).package_id.as_deref(), Some(B));
    world.wait_events("rh", "AdoptedHost", 1).await;
}

#[tokio::test]
async fn a_package_of_another_type_is_skipped_with_a_note() {
    let world = World::start("fallback-7005", |_| {}).await;
    world.create("rh", spec(OTHER_TYPE, &[B])).await;
    let obj = world.wait_rented("rh", LIMIT).await;
    let id = host_id(&obj).unwrap();
    assert_eq!(package_of(&world, &id), B);
    let s = status(&obj);
    let skipped = s.skipped_packages.unwrap();
    assert_eq!(
        (skipped.image_id.as_str(), skipped.package_ids),
        ("507", vec![OTHER_TYPE.to_string()])
    );
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 2);
    world.wait_events("rh", "TypeMismatch", 1).await;
    let events = world.events("rh").await;
    let noted = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("TypeMismatch"))
        .filter_map(|e| e.message.as_deref())
        .any(|n| n.contains(OTHER_TYPE) && n.contains(B));
    assert!(noted, "{events:?}");
}
