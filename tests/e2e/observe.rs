//! Observing and operating rented hosts: the account-wide poll at N/25 cost, power state,
//! the connection Secret, adoption, drift and reboot.

use crate::support::eventually;
use crate::support::operator::{World, demo_spec, host_id, is};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use rentedhost_operator::controller::Config;
use std::time::{Duration, Instant};
use xds_simulator::{Endpoint, HostStatus};

const LIMIT: Duration = Duration::from_secs(30);

async fn rented(world: &World, name: &str) -> String {
    let obj = world.wait_condition(name, "Ready", "True", "Running").await;
    host_id(&obj).unwrap()
}

/// A world with one object, `rh`, whose host runs; and that host's id.
async fn running(prefix: &str, tweak: impl FnOnce(&mut Config)) -> (World, String) {
    let world = World::start(prefix, tweak).await;
    world.create("rh", demo_spec()).await;
    let id = rented(&world, "rh").await;
    (world, id)
}

#[tokio::test]
async fn sixty_objects_cost_at_most_three_mypage_calls_per_poll() {
    let world = World::start("sixty", |c| c.poll_interval = Duration::from_secs(2)).await;
    for i in 0..60 {
        world.create(&format!("rh-{i:02}"), demo_spec()).await;
    }
    for i in 0..60 {
        rented(&world, &format!("rh-{i:02}")).await;
    }
    // Let the last transitional polls settle, then count whole poll intervals.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (pages, ones) = (
        world.sim.calls(Endpoint::MyPage),
        world.sim.calls(Endpoint::One),
    );
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let pages = world.sim.calls(Endpoint::MyPage) - pages;
    let polls = (window.as_secs_f64() / 2.0 / 0.9).ceil() as u64;
    println!(
        "60 idle objects: {pages} mypage calls in {window:?} at a 2 s poll ({:.1} per poll)",
        pages as f64 / 5.0
    );
    assert!(pages <= 3 * polls, "{pages} mypage calls for {polls} polls");
    assert!(pages >= 3, "the poll runs");
    assert_eq!(
        world.sim.calls(Endpoint::One) - ones,
        0,
        "no one/{{id}} in steady state"
    );
    // A host rented after the last listing is asked for alone, once, while the rate limit
    // has room: never more than one per create.
    assert!(world.sim.calls(Endpoint::One) <= 60);
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 60);
}

#[tokio::test]
async fn a_host_stopped_at_the_provider_is_seen_within_one_poll_and_started_again() {
    let (world, id) = running("drift-power", |c| c.poll_interval = Duration::from_secs(2)).await;
    world.sim.set_host_status(&id, HostStatus::Stopped);
    let stopped_at = Instant::now();
    world
        .wait_for("rh", LIMIT, "seen stopped", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.host.as_ref())
                .and_then(|h| h.status.as_deref())
                == Some("Stopped")
        })
        .await;
    assert!(
        stopped_at.elapsed() < Duration::from_millis(2200 + 1000),
        "seen after {:?}",
        stopped_at.elapsed()
    );
    rented(&world, "rh").await;
    assert_eq!(world.sim.calls(Endpoint::Operate), 1);
    assert_eq!(world.sim.host_status(&id), Some(HostStatus::Running));
    world.wait_events("rh", "PowerOn", 1).await;
}

#[tokio::test]
async fn power_state_stopped_stops_the_host_and_running_starts_it() {
    let (world, id) = running("power", |_| {}).await;
    world
        .patch_spec("rh", serde_json::json!({"powerState": "Stopped"}))
        .await;
    let obj = world.wait_condition("rh", "Ready", "True", "Stopped").await;
    assert_eq!(format!("{:?}", obj.status.unwrap().phase), "Some(Stopped)");
    assert_eq!(world.sim.host_status(&id), Some(HostStatus::Stopped));
    world
        .patch_spec("rh", serde_json::json!({"powerState": "Running"}))
        .await;
    rented(&world, "rh").await;
    assert_eq!(world.sim.calls(Endpoint::Operate), 2);
}

#[tokio::test]
async fn starting_without_balance_is_explained() {
    let (world, id) = running("power6003", |_| {}).await;
    world
        .sim
        .update_account("demo-account", |a| a.balance = 0.0);
    world.sim.set_host_status(&id, HostStatus::Stopped);
    let e = world.failed("rh", "Ready", "InsufficientBalance").await;
    assert_eq!(e.code, Some(6003));
    assert!(e.message.contains("cannot start"), "{}", e.message);
}

#[tokio::test]
async fn the_connection_secret_holds_the_login_and_goes_with_its_object() {
    let world = World::start("connection", |_| {}).await;
    let mut spec = demo_spec();
    spec["connectionSecretName"] = "render-login".into();
    world.create("rh", spec).await;
    world.create("plain", demo_spec()).await;
    let id = rented(&world, "rh").await;
    rented(&world, "plain").await;
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), &world.ns);
    let host = world.sim.state().hosts.get(&id).unwrap().host.clone();
    let read =
        |s: &Secret, k: &str| String::from_utf8(s.data.as_ref().unwrap()[k].0.clone()).unwrap();
    let secret = world.wait_secret("render-login").await;
    let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["address", "hostAccount", "hostPw", "port"]);
    assert_eq!(read(&secret, "hostPw"), host.host_pw.clone().unwrap());
    assert_eq!(read(&secret, "port"), host.port.unwrap().to_string());
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("RentedHost", "rh", Some(true))
    );
    // The default name is <name>-connection.
    world.wait_secret("plain-connection").await;

    // The provider changes the password: the Secret follows within a poll.
    world.sim.state().hosts.get_mut(&id).unwrap().host.host_pw = Some("n3w-pa55word".into());
    let start = Instant::now();
    while read(&secrets.get("render-login").await.unwrap(), "hostPw") != "n3w-pa55word" {
        assert!(start.elapsed() < LIMIT, "the Secret was not updated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Never in status or events.
    let obj = world.get("rh").await;
    let status = serde_json::to_string(&obj.status).unwrap();
    assert!(!status.contains("n3w-pa55word") && !status.contains(&host.host_pw.clone().unwrap()));
    for event in world.events("rh").await {
        assert!(!event.message.unwrap_or_default().contains("pa55word"));
    }
    // Nor in the logs (debug level included), nor the account secret.
    let logs = crate::support::logs::text();
    assert!(
        logs.contains("provider call"),
        "the operator's logs are captured"
    );
    for secret in [
        "n3w-pa55word",
        host.host_pw.as_deref().unwrap(),
        "demo-secret",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    world.api().delete("rh", &Default::default()).await.unwrap();
    world.wait_gone("rh", LIMIT).await;
    // The garbage collector removes what the object owned.
    let start = Instant::now();
    while secrets.get_opt("render-login").await.unwrap().is_some() {
        assert!(
            start.elapsed() < LIMIT,
            "the connection Secret outlived its object; garbage collector log:\n{}",
            crate::support::shared().log_tail("kube-controller-manager")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        secrets.get_opt("plain-connection").await.unwrap().is_some(),
        "only the deleted object's Secret goes"
    );
}

#[tokio::test]
async fn spec_host_id_adopts_without_renting_and_a_second_claim_is_refused() {
    let world = World::start("adopt", |_| {}).await;
    let body = serde_json::json!({"packageId": "kQvBmLtRzA", "imageId": "507", "periodNumber": 1, "periodType": 2});
    let made = world.sim.state().create_rent("demo-account", &body);
    let id = made.data.as_str().unwrap().to_string();
    let mut spec = demo_spec();
    spec["hostId"] = id.clone().into();
    world.create("first", spec.clone()).await;
    assert_eq!(rented(&world, "first").await, id);
    world.create("second", spec).await;
    let msg = world.failed("second", "Ready", "HostClaimed").await.message;
    assert!(msg.contains(&id) && msg.contains("first"), "{msg}");
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 0);
    assert_eq!(world.sim.host_ids(), vec![id]);
    world.wait_events("first", "AdoptedHost", 1).await;
    // Deleting the refused claim must not release the other object's host.
    world
        .api()
        .delete("second", &Default::default())
        .await
        .unwrap();
    world.wait_gone("second", LIMIT).await;
    assert_eq!(world.sim.host_ids().len(), 1);
}

#[tokio::test]
async fn a_vanished_host_is_not_found_and_an_expired_one_is_expired() {
    let world = World::start("drift", |c| c.poll_interval = Duration::from_secs(1)).await;
    world.create("gone", demo_spec()).await;
    world.create("old", demo_spec()).await;
    let gone = rented(&world, "gone").await;
    let old = rented(&world, "old").await;
    world.sim.remove_host(&gone);
    world.sim.set_host_status(&old, HostStatus::Expired);
    world
        .wait_condition("gone", "Ready", "False", "HostNotFound")
        .await;
    let obj = world
        .wait_condition("old", "Ready", "False", "Expired")
        .await;
    assert_eq!(format!("{:?}", obj.status.unwrap().phase), "Some(Expired)");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        2,
        "a vanished host is never rented again"
    );
    world.wait_events("old", "Expired", 1).await;
    world.wait_events("gone", "HostNotFound", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let expired_events = world.count_events("old", "Expired").await;
    assert_eq!(expired_events, 1);
    let gone_events = world.count_events("gone", "HostNotFound").await;
    assert_eq!(gone_events, 1);
}

/// Asks for a reboot with a new annotation value and waits until the object took it up
/// (recorded it: the reboot itself is sent right after).
async fn request_reboot(world: &World, value: &str) {
    world
        .annotate("rh", "xuandashi.dev/reboot-requested-at", value)
        .await;
    let handled = |o: &rentedhost_operator::api::RentedHost| {
        o.status
            .as_ref()
            .and_then(|s| s.last_reboot_request.as_deref())
            == Some(value)
    };
    world
        .wait_for("rh", LIMIT, "reboot taken up", handled)
        .await;
}

#[tokio::test]
async fn the_reboot_annotation_reboots_once_per_value() {
    let (world, _) = running("reboot", |_| {}).await;
    request_reboot(&world, "2026-11-26T08:00:00Z").await;
    rented(&world, "rh").await;
    world.wait_events("rh", "Rebooting", 1).await;
    // Unrelated changes do not reboot again.
    world.annotate("rh", "example.com/note", "hello").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(world.sim.calls(Endpoint::Reboot), 1);
    request_reboot(&world, "2026-11-26T09:00:00Z").await;
    // The request is recorded before the reboot is sent: its event follows the call.
    world.wait_events("rh", "Rebooting", 2).await;
    assert_eq!(world.sim.calls(Endpoint::Reboot), 2);

    // One asked of a host the spec wants stopped is dropped with a note, never sent (the
    // provider would refuse it with 7002/7004), and not tried again for the same value.
    world
        .patch_spec("rh", serde_json::json!({"powerState": "Stopped"}))
        .await;
    world.wait_condition("rh", "Ready", "True", "Stopped").await;
    request_reboot(&world, "2026-11-26T10:00:00Z").await;
    world.wait_events("rh", "RebootDropped", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(world.sim.calls(Endpoint::Reboot), 2);
}

/// Issue 22, finding 6: a reboot is recorded before it is sent, in a write guarded by the
/// version its decision saw; a reconcile on a cache that lags that record used to reboot
/// again, and now conflicts instead.
#[tokio::test]
async fn a_lagging_cache_never_reboots_twice_for_one_request() {
    let (mut world, _) = running("reboot-lag", |_| {}).await;
    world.kill_controller().await;
    world.lag_watches(Duration::from_secs(2)).await;
    world.start_controller();
    world.wait_condition("rh", "Ready", "True", "Running").await;
    request_reboot(&world, "2026-11-26T08:00:00Z").await;
    // Past the lag, several fast polls of a host that is starting again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(world.sim.calls(Endpoint::Reboot), 1, "one reboot per value");
    world.wait_events("rh", "Rebooting", 1).await;
}

/// Creates `n` objects (`rh-000`…) 50 at a time and waits until all are Ready and
/// running, at most `limit`.
async fn create_all_ready(world: &World, n: usize, limit: Duration) {
    let start = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("rh-{i:03}")).collect();
    for chunk in names.chunks(50) {
        futures::future::join_all(chunk.iter().map(|name| world.create(name, demo_spec()))).await;
    }
    loop {
        let list = world.api().list(&Default::default()).await.unwrap();
        let ready = list
            .items
            .iter()
            .filter(|o| is(o, "Ready", "True", "Running"))
            .count();
        if ready == n {
            return;
        }
        assert!(start.elapsed() < limit, "{ready}/{n} ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Provider calls per poll with `n` idle objects (all rented and running), measured over
/// `polls` poll intervals of 2 s. Prints the figures.
async fn idle_cost(n: usize, polls: u32) -> (u64, u64) {
    let interval = Duration::from_secs(2);
    let world = World::start(&format!("idle{n}"), |c| c.poll_interval = interval).await;
    world
        .sim
        .update_account("demo-account", |a| a.balance = 1e12);
    let start = Instant::now();
    create_all_ready(&world, n, Duration::from_secs(240)).await;
    let settle_and_ready = start.elapsed();
    tokio::time::sleep(interval * 2).await;
    let all = |sim: &xds_simulator::Simulator| sim.state().calls.values().sum::<u64>();
    let (pages, total) = (world.sim.calls(Endpoint::MyPage), all(&world.sim));
    let window = interval * polls;
    tokio::time::sleep(window).await;
    let pages = world.sim.calls(Endpoint::MyPage) - pages;
    let total = all(&world.sim) - total;
    println!(
        "{n} idle objects: {pages} mypage calls and {total} provider calls in {polls} polls of {interval:?} \
         ({:.1} per poll, i.e. per minute at the default 60 s poll); all {n} ready {settle_and_ready:.1?} after creation",
        total as f64 / f64::from(polls)
    );
    assert!(
        world.sim.calls(Endpoint::One) <= n as u64,
        "one/{{id}} once per create at most"
    );
    assert_eq!(world.sim.calls(Endpoint::CreateRent), n as u64);
    (pages, total)
}

#[tokio::test]
async fn six_hundred_idle_objects_cost_twenty_four_mypage_calls_per_poll() {
    let polls = 5;
    let (pages, total) = idle_cost(600, polls).await;
    let per_poll = 600u64.div_ceil(25);
    // The jitter (±10 %) can fit one extra poll in the window.
    assert!(
        pages <= per_poll * u64::from(polls + 1),
        "{pages} mypage calls"
    );
    assert!(
        pages >= per_poll * u64::from(polls - 2),
        "{pages} mypage calls: the poll runs"
    );
    assert_eq!(total, pages, "nothing but mypage while idle");
}

/// Renting many hosts at once lists the account about once per poll, not once per
/// reconcile: a host rented after the last listing is seen through `one/{id}`, asked once
/// beside the write of its id, and later reconciles of its object (the watch reporting the
/// controller's own writes) need no listing for it.
#[tokio::test]
async fn renting_two_hundred_hosts_lists_the_account_about_once_per_poll() {
    let n = 200;
    let (poll, fast) = (Duration::from_secs(30), Duration::from_secs(10));
    let world = World::start("churn", |c| {
        c.poll_interval = poll;
        c.fast_poll_interval = fast;
        c.concurrency = 4;
    })
    .await;
    {
        let mut state = world.sim.state();
        state.timing.start_delay = Duration::ZERO;
        state.timing.latency = Duration::from_millis(100);
    }
    world
        .sim
        .update_account("demo-account", |a| a.balance = 1e12);
    let start = Instant::now();
    create_all_ready(&world, n, Duration::from_secs(180)).await;
    let took = start.elapsed();
    let listings = world.sim.state().listings;
    let pages = world.sim.calls(Endpoint::MyPage);
    // One listing at the first look, one per fast poll while hosts are new, one spare.
    let allowed = (took.as_secs_f64() / fast.as_secs_f64()).ceil() as u64 + 2;
    println!(
        "{n} objects Ready in {took:.1?}: {listings} listings ({pages} mypage calls; {allowed} listings allowed), {} one/{{id}}",
        world.sim.calls(Endpoint::One)
    );
    assert_eq!(world.sim.calls(Endpoint::CreateRent), n as u64);
    assert!(
        listings <= allowed,
        "{listings} listings ({pages} pages) while {n} hosts were rented in {took:.1?}"
    );
    assert!(
        world.sim.calls(Endpoint::One) <= n as u64,
        "one/{{id}} once per host at most"
    );
    // A host running at its first look: one event, the create's and the look's together.
    // Events go out from a queue after the status write: awaited, then counted.
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(world.client.clone(), &world.ns);
    let reasons = eventually(Duration::from_secs(30), "the Created events", || async {
        let mut reasons = std::collections::BTreeMap::<String, usize>::new();
        for e in events.list(&Default::default()).await.unwrap().items {
            *reasons.entry(e.reason.unwrap_or_default()).or_default() += 1;
        }
        match reasons.values().sum::<usize>() >= n {
            true => Ok(reasons),
            false => Err(format!("{reasons:?}")),
        }
    })
    .await;
    println!("events by reason: {reasons:?}");
    let created = [("Created".to_string(), n)].into_iter().collect();
    assert_eq!(reasons, created, "one event per object");
}
