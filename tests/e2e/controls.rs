//! What users of cloud operators ask for beside the spec: pause, observe-only, the
//! operator-wide deletion default, the price in status, and "retry now".

use crate::support::operator::{World, condition, demo_spec, host_id, is};
use rentedhost_operator::api::{DeletionPolicy, PAUSED_ANNOTATION, RETRY_ANNOTATION};
use std::time::{Duration, Instant};
use xds_simulator::Endpoint;
use xds_simulator::Fault;
use xds_simulator::catalogue::DEMO_ACCOUNT;

const ACCOUNT: &str = DEMO_ACCOUNT.0;
use strum::IntoEnumIterator;

const LIMIT: Duration = Duration::from_secs(30);

/// Every provider call the simulator has answered, all endpoints together.
fn all_calls(world: &World) -> u64 {
    Endpoint::iter().map(|e| world.sim.calls(e)).sum()
}

async fn ready(world: &World, name: &str) -> String {
    let obj = world.wait_condition(name, "Ready", "True", "Running").await;
    host_id(&obj).unwrap()
}

/// A running host on the account that no object rented.
fn someone_elses_host(world: &World) -> String {
    let mut state = world.sim.state();
    let id = state.preload_hosts(ACCOUNT, 1).remove(0);
    state.settle_hosts();
    id
}

async fn remove_annotation(world: &World, name: &str, key: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {key: null}}});
    world.merge(name, patch).await.unwrap();
}

#[tokio::test]
async fn a_paused_object_makes_no_provider_call_until_the_pause_is_removed() {
    let world = World::start("pause", |c| c.poll_interval = Duration::from_millis(500)).await;
    // Paused from the start: not even rented.
    let late: rentedhost_operator::api::RentedHost = serde_json::from_value(serde_json::json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHost",
        "metadata": {"name": "late", "annotations": {PAUSED_ANNOTATION: "true"}},
        "spec": demo_spec(),
    }))
    .unwrap();
    world
        .api()
        .create(&Default::default(), &late)
        .await
        .unwrap();
    world.create("rh", demo_spec()).await;
    let id = ready(&world, "rh").await;

    world.annotate("rh", PAUSED_ANNOTATION, "true").await;
    let paused = world
        .wait_condition("rh", "Synced", "False", "Paused")
        .await;
    assert_eq!(
        condition(&paused, "Ready"),
        Some(("True".into(), "Running".into())),
        "the rest of the status stays"
    );
    // A spec change and a reboot request while paused: nothing happens at the provider.
    world
        .patch_spec("rh", serde_json::json!({"powerState": "Stopped"}))
        .await;
    world
        .annotate("rh", rentedhost_operator::api::REBOOT_ANNOTATION, "now")
        .await;
    let before = all_calls(&world);
    // Ten poll intervals.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = all_calls(&world) - before;
    println!("provider calls in 5 s paused (poll interval 500 ms): {during}");
    assert_eq!(during, 0, "no provider call while paused");
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        1,
        "the paused new object rented nothing"
    );
    let late = world.get("late").await;
    assert!(is(&late, "Synced", "False", "Paused"), "{:?}", late.status);
    assert_eq!(host_id(&late), None);

    // Removing it resumes at once: the host is stopped, and the reboot asked meanwhile is
    // dropped with a note (the spec wants the host stopped), not sent to be refused.
    let resumed_at = Instant::now();
    remove_annotation(&world, "rh", PAUSED_ANNOTATION).await;
    world.wait_condition("rh", "Ready", "True", "Stopped").await;
    println!("resumed in {:?}", resumed_at.elapsed());
    assert_eq!(world.sim.calls(Endpoint::Operate), 1);
    world.wait_events("rh", "RebootDropped", 1).await;
    assert_eq!(world.sim.calls(Endpoint::Reboot), 0);
    let obj = world.get("rh").await;
    assert_eq!(host_id(&obj), Some(id));
    remove_annotation(&world, "late", PAUSED_ANNOTATION).await;
    ready(&world, "late").await;
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 2);
}

#[tokio::test]
async fn a_paused_object_keeps_its_host_when_deleted_until_the_pause_is_removed() {
    let world = World::start("pause-del", |_| {}).await;
    world.create("rh", demo_spec()).await;
    let id = ready(&world, "rh").await;
    world.annotate("rh", PAUSED_ANNOTATION, "true").await;
    world
        .wait_condition("rh", "Synced", "False", "Paused")
        .await;
    world.delete("rh").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        world.sim.calls(Endpoint::Delete),
        0,
        "no release while paused"
    );
    assert!(world.sim.host_ids().contains(&id));
    assert!(
        world.api().get_opt("rh").await.unwrap().is_some(),
        "the finalizer stays"
    );
    remove_annotation(&world, "rh", PAUSED_ANNOTATION).await;
    world.wait_gone("rh", LIMIT).await;
    assert_eq!(world.sim.calls(Endpoint::Delete), 1);
    assert!(!world.sim.host_ids().contains(&id));
}

#[tokio::test]
async fn a_pending_create_of_a_paused_deleted_object_settles_but_its_host_waits_for_the_pause() {
    let world = World::start("pause-pending", |_| {}).await;
    // The create rents a host but its answer is lost; listings fail until the user is done.
    world.sim.inject(
        Endpoint::MyPage,
        std::iter::repeat_n(Fault::ServerError, 10_000),
    );
    world
        .sim
        .inject(Endpoint::CreateRent, [Fault::DropAfterCommit]);
    world.create("rh", demo_spec()).await;
    world
        .wait_for("rh", LIMIT, "pending", |o| {
            o.status
                .as_ref()
                .is_some_and(|s| s.create_pending.is_some())
        })
        .await;
    world.annotate("rh", PAUSED_ANNOTATION, "true").await;
    world.delete("rh").await;
    world.sim.state().faults.clear();
    // The create settles (its host is adopted), and the pause then holds the release.
    let obj = world
        .wait_for("rh", LIMIT, "settled and paused", |o| {
            host_id(o).is_some() && is(o, "Synced", "False", "Paused")
        })
        .await;
    let id = host_id(&obj).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        world.sim.calls(Endpoint::Delete),
        0,
        "no release while paused"
    );
    assert!(world.sim.host_ids().contains(&id));
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
    remove_annotation(&world, "rh", PAUSED_ANNOTATION).await;
    world.wait_gone("rh", LIMIT).await;
    assert_eq!(world.sim.calls(Endpoint::Delete), 1);
    assert!(world.sim.host_ids().is_empty(), "released once resumed");
}

#[tokio::test]
async fn observe_only_shows_a_host_and_never_operates_reboots_or_releases_it() {
    let world = World::start("observe-only", |_| {}).await;
    let id = someone_elses_host(&world);

    // Refused without a host to observe, naming the field.
    let mut no_host = demo_spec();
    no_host["managementPolicy"] = "ObserveOnly".into();
    let refused = world
        .api()
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "xuandashi.dev/v1alpha1", "kind": "RentedHost",
                "metadata": {"name": "nothing"}, "spec": no_host,
            }))
            .unwrap(),
        )
        .await;
    let message = format!("{refused:?}");
    assert!(
        message.contains("spec.managementPolicy")
            && message.contains("ObserveOnly needs spec.hostId"),
        "{message}"
    );

    let mut spec = demo_spec();
    spec["managementPolicy"] = "ObserveOnly".into();
    spec["hostId"] = id.clone().into();
    spec["powerState"] = "Stopped".into();
    spec["deletionPolicy"] = "Delete".into();
    world.create("rh", spec).await;
    // Ready as it runs, though the spec asks for Stopped; the observation shows the policy.
    let obj = world
        .wait_for("rh", LIMIT, "observed", |o| {
            is(o, "Ready", "True", "Running")
                && o.status
                    .as_ref()
                    .is_some_and(|s| s.deletion_policy.is_some())
        })
        .await;
    let status = obj.status.unwrap();
    assert_eq!(status.host_id.as_deref(), Some(id.as_str()));
    assert!(status.host.unwrap().expires_at.is_some());
    assert_eq!(
        status.deletion_policy,
        Some(DeletionPolicy::Orphan),
        "never released"
    );
    world.wait_secret("rh-connection").await;
    world
        .annotate("rh", rentedhost_operator::api::REBOOT_ANNOTATION, "now")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for endpoint in [
        Endpoint::Operate,
        Endpoint::Reboot,
        Endpoint::Delete,
        Endpoint::CreateRent,
    ] {
        assert_eq!(world.sim.calls(endpoint), 0, "{endpoint:?}");
    }

    world.delete("rh").await;
    world.wait_gone("rh", LIMIT).await;
    assert_eq!(
        world.sim.calls(Endpoint::Delete),
        0,
        "observe-only never releases"
    );
    assert!(
        world.sim.host_ids().contains(&id),
        "the host is still there"
    );
    world.wait_events("rh", "Orphaned", 1).await;
}

#[tokio::test]
async fn switching_observe_only_to_full_takes_the_host_over() {
    let world = World::start("take-over", |_| {}).await;
    let id = someone_elses_host(&world);
    let mut spec = demo_spec();
    spec["managementPolicy"] = "ObserveOnly".into();
    spec["hostId"] = id.clone().into();
    spec["powerState"] = "Stopped".into();
    world.create("rh", spec).await;
    // Observed as it runs, though the spec asks for Stopped.
    world
        .wait_for("rh", LIMIT, "observed", |o| {
            o.status.as_ref().and_then(|s| s.host.as_ref()).is_some()
        })
        .await;
    assert_eq!(world.sim.calls(Endpoint::Operate), 0);
    world
        .patch_spec("rh", serde_json::json!({"managementPolicy": "Full"}))
        .await;
    world.wait_condition("rh", "Ready", "True", "Stopped").await;
    assert_eq!(world.sim.calls(Endpoint::Operate), 1);
    world.delete("rh").await;
    world.wait_gone("rh", LIMIT).await;
    assert_eq!(world.sim.calls(Endpoint::Delete), 1, "Full releases");
    assert!(!world.sim.host_ids().contains(&id));
}

#[tokio::test]
async fn the_operator_wide_deletion_default_applies_when_the_object_names_none() {
    let world = World::start("deletion-default", |c| {
        c.default_deletion_policy = DeletionPolicy::Orphan
    })
    .await;
    world.create("kept", demo_spec()).await;
    let mut spec = demo_spec();
    spec["deletionPolicy"] = "Delete".into();
    world.create("released", spec).await;
    let kept = ready(&world, "kept").await;
    let released = ready(&world, "released").await;
    let effective = |name: &'static str| {
        let world = &world;
        async move { world.get(name).await.status.unwrap().deletion_policy }
    };
    assert_eq!(
        world.get("kept").await.spec.deletion_policy,
        None,
        "the CRD fills in nothing"
    );
    assert_eq!(effective("kept").await, Some(DeletionPolicy::Orphan));
    assert_eq!(effective("released").await, Some(DeletionPolicy::Delete));
    for name in ["kept", "released"] {
        world.delete(name).await;
        world.wait_gone(name, LIMIT).await;
    }
    assert_eq!(world.sim.calls(Endpoint::Delete), 1);
    let hosts = world.sim.host_ids();
    assert!(hosts.contains(&kept), "the default (Orphan) kept it");
    assert!(!hosts.contains(&released));
}

#[tokio::test]
async fn status_price_is_what_the_package_list_says_and_what_the_provider_charged() {
    for as_text in [false, true] {
        let world = World::start("price", |_| {}).await;
        world.sim.state().freedom.prices_as_text = as_text;
        let balance = |world: &World| world.sim.state().accounts[ACCOUNT].balance;
        let before = balance(&world);
        world.create("rh", demo_spec()).await;
        ready(&world, "rh").await;
        let obj = world
            .wait_for("rh", LIMIT, "priced", |o| {
                o.status.as_ref().and_then(|s| s.price.as_ref()).is_some()
            })
            .await;
        let price = obj.status.unwrap().price.unwrap();
        // The package list, read here on its own: amount × discount an hour, 720 hours a month.
        let (amount, discount) = {
            let state = world.sim.state();
            let p = state
                .packages
                .iter()
                .find(|p| p.package_id.as_deref() == Some("teTapaSUFq"))
                .unwrap();
            let n = |v: &Option<String>| v.as_deref().unwrap().parse::<f64>().unwrap();
            (n(&p.amount), n(&p.discount))
        };
        let hourly: f64 = price.hourly.parse().unwrap();
        let total: f64 = price.prepaid_total.parse().unwrap();
        println!("prices as text {as_text}: {price:?}");
        assert!(
            (hourly - amount * discount).abs() < 1e-9,
            "{hourly} vs {amount} × {discount}"
        );
        assert!(
            (total - amount * discount * 720.0 * 5.0).abs() < 1e-6,
            "{total}"
        );
        assert!(
            (before - balance(&world) - total).abs() < 1e-6,
            "what the provider charged"
        );
        assert_eq!(price.currency, "CNY");
        assert_eq!(
            world.sim.calls(Endpoint::Package),
            1,
            "one package list for the account"
        );
        let spend = world.metrics.render();
        let line = format!(
            "rentedhost_prepaid_spend_total{{namespace=\"{}\"}} {}",
            world.ns, price.prepaid_total
        );
        assert!(spend.contains(&line), "{line} missing from\n{spend}");
    }
}

#[tokio::test]
async fn a_retry_request_after_a_top_up_rents_at_once_whatever_the_backoff() {
    // The retry table at full scale: 9001 waits a minute, then two, and so on.
    let world = World::start("retry-now", |c| c.retry_scale = 1.0).await;
    world.sim.update_account(ACCOUNT, |a| a.balance = 0.0);
    world.create("rh", demo_spec()).await;
    let e = world.failed("rh", "Ready", "InsufficientBalance").await;
    assert_eq!(e.code, Some(9001));
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
    world
        .sim
        .update_account(ACCOUNT, |a| a.balance = 1_000_000.0);
    // A top-up alone waits out the backoff (a minute).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        1,
        "the backoff holds"
    );
    let asked = Instant::now();
    world
        .annotate("rh", RETRY_ANNOTATION, "2026-11-26T12:00:00Z")
        .await;
    let obj = world.wait_rented("rh", Duration::from_secs(10)).await;
    let took = asked.elapsed();
    println!("rented {took:?} after the retry request");
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 2, "one retry");
    assert_eq!(
        obj.status.unwrap().last_retry_request.as_deref(),
        Some("2026-11-26T12:00:00Z")
    );
}

#[tokio::test]
async fn a_retry_value_acts_once() {
    let world = World::start("retry-once", |c| c.retry_scale = 1.0).await;
    world.sim.update_account(ACCOUNT, |a| a.balance = 0.0);
    world.create("rh", demo_spec()).await;
    world.failed("rh", "Ready", "InsufficientBalance").await;
    world.annotate("rh", RETRY_ANNOTATION, "first").await;
    world
        .wait_for("rh", LIMIT, "retried", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.last_retry_request.as_deref())
                == Some("first")
                && o.status
                    .as_ref()
                    .and_then(|s| s.create_pending.as_ref())
                    .is_none()
        })
        .await;
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 2);
    // The same value again (another annotation changes): no further create.
    world.annotate("rh", "unrelated", "x").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        2,
        "a value acts once"
    );
}
