//! Running the operator: leader election between replicas, and its HTTP port.

use crate::support::eventually;
use crate::support::operator::{World, demo_spec, is};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use rentedhost_operator::leader::{self, Ended, LeaseConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use xds_simulator::Endpoint;

fn lease(ns: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: ns.into(),
        name: "rentedhost-operator".into(),
        identity: identity.into(),
        duration: Duration::from_secs(2),
        leadership: leader::Leadership::elected(),
    }
}

async fn holder(client: &kube::Client, ns: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    leases
        .get_opt("rentedhost-operator")
        .await
        .unwrap()?
        .spec?
        .holder_identity
}

/// Waits until `identity` holds the namespace's Lease, so that a replica started next
/// stands by (a fixed head start loses to a busy API server now and then).
async fn await_holder(client: &kube::Client, ns: &str, identity: &str) {
    let identity = identity.to_string();
    eventually(Duration::from_secs(20), "the lease taken", || async {
        match holder(client, ns).await {
            Some(h) if h == identity => Ok(()),
            other => Err(format!("held by {other:?}")),
        }
    })
    .await
}

/// Runs an elected replica whose work only records that it runs; `stop` ends it.
fn replica(
    client: kube::Client,
    ns: &str,
    identity: &str,
) -> (
    Arc<AtomicBool>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Ended>,
) {
    let leading = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let flag = leading.clone();
    let task = tokio::spawn(leader::run_elected(
        client,
        lease(ns, identity),
        async {
            let _ = stop_rx.await;
        },
        move |shutdown| async move {
            flag.store(true, Ordering::SeqCst);
            shutdown.wait().await;
            flag.store(false, Ordering::SeqCst);
        },
    ));
    (leading, stop_tx, task)
}

#[tokio::test]
async fn one_replica_leads_and_hands_over_when_it_stops() {
    let plane = crate::support::shared();
    let client = plane.client().await;
    let ns = crate::support::test_namespace(&client, "lease").await;
    let (a, stop_a, task_a) = replica(client.clone(), &ns, "replica-a");
    await_holder(&client, &ns, "replica-a").await;
    let (b, _stop_b, _task_b) = replica(client.clone(), &ns, "replica-b");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        a.load(Ordering::SeqCst) && !b.load(Ordering::SeqCst),
        "exactly one leads, and keeps leading by renewing"
    );
    assert_eq!(holder(&client, &ns).await.as_deref(), Some("replica-a"));
    stop_a.send(()).unwrap();
    assert_eq!(task_a.await.unwrap(), Ended::Stopped);
    let handed = Instant::now();
    while !b.load(Ordering::SeqCst) {
        assert!(
            handed.elapsed() < Duration::from_secs(2),
            "a released lease is taken without waiting for it to expire"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!a.load(Ordering::SeqCst));
    assert_eq!(holder(&client, &ns).await.as_deref(), Some("replica-b"));
}

/// Creates `rh-<i>` for each i and waits until every one has a host.
async fn rent_all(world: &World, range: std::ops::Range<usize>) {
    for i in range.clone() {
        world.create(&format!("rh-{i}"), demo_spec()).await;
    }
    for i in range {
        world
            .wait_rented(&format!("rh-{i}"), Duration::from_secs(30))
            .await;
    }
}

#[tokio::test]
async fn two_operator_replicas_rent_once_per_object_even_when_the_leader_dies() {
    let mut world = World::start("replicas", |_| {}).await;
    world.kill_controller().await;
    world.start_replica("replica-a");
    await_holder(&world.client, &world.ns, "replica-a").await;
    world.start_replica("replica-b");
    rent_all(&world, 0..5).await;
    assert_eq!(
        holder(&world.client, &world.ns).await.as_deref(),
        Some("replica-a")
    );
    // The leader dies without releasing its lease: the other takes over once it expires.
    world.kill_replica(0).await;
    rent_all(&world, 5..8).await;
    assert_eq!(
        holder(&world.client, &world.ns).await.as_deref(),
        Some("replica-b")
    );
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 8);
    assert_eq!(world.sim.host_ids().len(), 8);
}

/// What a Deployment's readiness probe and a PodDisruptionBudget count on: a standby is
/// Ready (it used to answer 503 "object cache not synced yet" until it led, so a rolling
/// update waited on it forever), and who leads is the `rentedhost_leader` gauge.
#[tokio::test]
async fn a_standby_is_ready_and_the_leader_gauge_follows_the_lease() {
    let mut world = World::start("readyz-standby", |_| {}).await;
    world.kill_controller().await;
    let a = world.start_replica("replica-a");
    await_holder(&world.client, &world.ns, "replica-a").await;
    let b = world.start_replica("replica-b");
    let serve = |metrics| async move {
        let any = "127.0.0.1:0".parse().unwrap();
        rentedhost_operator::http::serve(any, metrics)
            .await
            .unwrap()
    };
    let (addr_a, addr_b) = (serve(a.clone()).await, serve(b.clone()).await);
    let get = |addr: std::net::SocketAddr, path: &'static str| async move {
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let leader_gauge = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("rentedhost_leader "))
            .map(str::to_string)
    };
    let until = |addr, want: &'static str| async move {
        let start = Instant::now();
        loop {
            let got = get(addr, "/readyz").await;
            if got == (200, want.to_string()) {
                return start.elapsed();
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{addr}: {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    until(addr_a, "ok: leading").await;
    until(addr_b, "ok: standing by (another replica leads)").await;
    let (_, metrics_a) = get(addr_a, "/metrics").await;
    let (_, metrics_b) = get(addr_b, "/metrics").await;
    assert_eq!(leader_gauge(&metrics_a).as_deref(), Some("1"));
    assert_eq!(leader_gauge(&metrics_b).as_deref(), Some("0"));
    rent_all(&world, 0..2).await;
    // The leader dies without releasing its lease: the standby leads within one lease
    // duration (2 s) of its expiry, and is ready once its caches synced.
    world.kill_replica(0).await;
    let took = until(addr_b, "ok: leading").await;
    println!("the standby led and was ready {took:?} after the leader died");
    assert!(took < Duration::from_secs(8), "{took:?}");
    let (_, metrics_b) = get(addr_b, "/metrics").await;
    assert_eq!(leader_gauge(&metrics_b).as_deref(), Some("1"));
    rent_all(&world, 2..3).await;
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 3);
}

/// Hole 6: a leader whose lease renewals hang (the API server stops answering it) stops
/// spending money before another replica can take over, and stops working soon after.
#[tokio::test]
async fn a_leader_whose_renewals_hang_stops_leading_before_another_takes_over() {
    let plane = crate::support::shared();
    let client = plane.client().await;
    let ns = crate::support::test_namespace(&client, "hung-lease").await;
    let stalled = Arc::new(AtomicBool::new(false));
    let hanging = plane.client_stalling("/leases", stalled.clone()).await;
    let elected = |client: kube::Client, identity: &str| {
        let config = lease(&ns, identity);
        let leadership = config.leadership.clone();
        let working = Arc::new(AtomicBool::new(false));
        let flag = working.clone();
        tokio::spawn(leader::run_elected(
            client,
            config,
            std::future::pending(),
            move |shutdown| async move {
                flag.store(true, Ordering::SeqCst);
                shutdown.wait().await;
                flag.store(false, Ordering::SeqCst);
            },
        ));
        (leadership, working)
    };
    let (a_leads, a_works) = elected(hanging, "replica-a");
    await_holder(&client, &ns, "replica-a").await;
    let (b_leads, b_works) = elected(client.clone(), "replica-b");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a_leads.is_leading() && a_works.load(Ordering::SeqCst));
    assert!(!b_leads.is_leading() && !b_works.load(Ordering::SeqCst));
    stalled.store(true, Ordering::SeqCst);
    let hung = Instant::now();
    let mut b_since = None;
    while hung.elapsed() < Duration::from_secs(8) {
        if b_leads.is_leading() {
            assert!(
                !a_leads.is_leading(),
                "two replicas may spend money at once, {:?} after A's renewals hung",
                hung.elapsed()
            );
            b_since.get_or_insert_with(Instant::now);
        }
        if b_since.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b_since = b_since.expect("the other replica takes over");
    println!(
        "A's renewals hung; B leads {:?} later",
        b_since.duration_since(hung)
    );
    assert!(!a_works.load(Ordering::SeqCst), "A stopped working");
    assert!(b_works.load(Ordering::SeqCst));
}

#[tokio::test]
async fn the_http_port_serves_metrics_and_probes() {
    let world = World::start("metrics", |_| {}).await;
    let addr =
        rentedhost_operator::http::serve("127.0.0.1:0".parse().unwrap(), world.metrics.clone())
            .await
            .unwrap();
    world.create("rh", demo_spec()).await;
    world
        .wait_for("rh", Duration::from_secs(30), "ready", |o| {
            is(o, "Ready", "True", "Running")
        })
        .await;
    let get = |path: &str| {
        let url = format!("http://{addr}{path}");
        async move {
            let response = reqwest::get(url).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok".to_string()));
    assert_eq!(get("/readyz").await, (200, "ok: leading".to_string()));
    // The gauges come from the operator's cache, which may trail the read that saw Ready.
    let expected = [
        r#"rentedhost_provider_requests_total{endpoint="createRent",code="0"} 1"#,
        r#"rentedhost_provider_requests_total{endpoint="getToken",code="0"} 1"#,
        r#"rentedhost_hosts{phase="Running"} 1"#,
        "rentedhost_create_pending 0",
        "rentedhost_leader 1",
        "rentedhost_token_refresh_total 1",
        r#"rentedhost_objects{condition="Ready",reason="Running"} 1"#,
        r#"rentedhost_objects{condition="Synced",reason="Observed"} 1"#,
        "rentedhost_time_to_ready_seconds_count 1",
        r#"rentedhost_time_to_ready_seconds_bucket{le="+Inf"} 1"#,
    ];
    let text = eventually(Duration::from_secs(10), "the metrics", || async {
        let (status, text) = get("/metrics").await;
        match expected
            .iter()
            .find(|line| status != 200 || !text.contains(*line))
        {
            None => Ok(text),
            Some(line) => Err(format!("{status}: {line} missing from:\n{text}")),
        }
    })
    .await;
    assert!(text.contains(r#"rentedhost_reconcile_total{result="ok"}"#));
    // A label value is `="…"`; the namespace's random suffix may itself end in "rh".
    assert!(
        !text.contains("=\"rh\"") && !text.contains("/rh\""),
        "no object names in labels:\n{text}"
    );
    let with_namespace: Vec<&str> = text.lines().filter(|l| l.contains(&world.ns)).collect();
    assert!(
        with_namespace
            .iter()
            .all(|l| l.starts_with("rentedhost_prepaid_spend_total{")),
        "namespaces label prepaid spend only: {with_namespace:?}"
    );
}
