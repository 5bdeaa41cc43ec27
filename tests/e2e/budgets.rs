//! RentedHostBudget: the creates of a namespace never spend past its limit, whatever runs
//! at once; a create that does not fit, or whose price is unknown, is not sent.

use crate::support::{install_crd, kubectl_apply, run_ok};

fn budget(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: xuandashi.dev/v1alpha1\nkind: RentedHostBudget\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

#[tokio::test]
async fn budgets_are_validated_naming_the_field() {
    let plane = install_crd();
    let client = plane.client().await;
    let ns = crate::support::test_namespace(&client, "rhb-invalid").await;
    for (name, spec) in [
        ("text", "  limit: \"5000.00\"\n"),
        ("whole", "  limit: 5000\n  window: Total\n  maxHosts: 5\n"),
        ("tenth", "  limit: \"259.2\"\n"),
    ] {
        let out = kubectl_apply(plane, &ns, &budget(name, spec));
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (name, spec, expected) in [
        ("comma", "  limit: \"5,000\"\n", "spec.limit"),
        ("negative", "  limit: -1\n", "spec.limit"),
        ("minus", "  limit: \"-1\"\n", "spec.limit"),
        ("fen", "  limit: \"1.234\"\n", "spec.limit"),
        ("week", "  limit: 1\n  window: Week\n", "spec.window"),
        ("hosts", "  limit: 1\n  maxHosts: -1\n", "spec.maxHosts"),
        ("none", "  window: Total\n", "spec.limit"),
    ] {
        let out = kubectl_apply(plane, &ns, &budget(name, spec));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    let listed = run_ok(
        plane
            .kubectl()
            .args(["get", "rhb", "-n", &ns, "-o", "name"]),
    );
    assert_eq!(listed.lines().count(), 3, "{listed}");
    for example in [
        "rentedhostbudget.yaml",
        "rentedhost.yaml",
        "rentedhostpool.yaml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(example);
        let out = plane
            .kubectl()
            .args(["apply", "--dry-run=server", "-n", &ns, "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let explain = run_ok(plane.kubectl().args(["explain", "rhb.spec.limit"]));
    assert!(
        explain.contains("CNY") && explain.contains("two decimal"),
        "{explain}"
    );
}

use crate::support::eventually;
use crate::support::operator::{World, condition, demo_spec, host_id, is};
use kube::ResourceExt;
use kube::api::Api;
use rentedhost_operator::api::{RentedHost, RentedHostBudget, RentedHostBudgetStatus};
use std::time::{Duration, Instant};
use xds_simulator::{Endpoint, Fault};

/// The demo package for a day: 2.5 CNY × 0.8 an hour × 24 hours.
const DAY_PRICE: &str = "48.00";

fn day_spec() -> serde_json::Value {
    let mut spec = demo_spec();
    spec["period"] = serde_json::json!({"count": 1, "unit": "Day"});
    spec
}

fn apply_budget(world: &World, name: &str, spec: &str) {
    let out = kubectl_apply(install_crd(), &world.ns, &budget(name, spec));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn budgets(world: &World) -> Api<RentedHostBudget> {
    Api::namespaced(world.client.clone(), &world.ns)
}

async fn budget_status(world: &World, name: &str) -> RentedHostBudgetStatus {
    let budget = budgets(world).get(name).await.unwrap();
    budget.status.unwrap_or_default()
}

/// Budget `name`'s status once it holds no reservation (30 s at most).
async fn settled_status(world: &World, name: &str) -> RentedHostBudgetStatus {
    eventually(Duration::from_secs(30), "no reservation left", || async {
        let status = budget_status(world, name).await;
        match status.reservations.is_empty() {
            true => Ok(status),
            false => Err(format!("{status:?}")),
        }
    })
    .await
}

/// This month, as a `Month` budget names its window.
fn this_month() -> String {
    let date = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    format!("{:04}-{:02}", date.year(), date.month())
}

/// Creates `n` objects at once: `rh-0`…
async fn create_all(world: &World, n: usize) {
    let names: Vec<String> = (0..n).map(|i| format!("rh-{i}")).collect();
    futures::future::join_all(names.iter().map(|n| world.create(n, day_spec()))).await;
}

/// Whether the object has a host, or was refused for a budget.
fn settled(o: &RentedHost) -> bool {
    host_id(o).is_some() || is(o, "Ready", "False", "BudgetExceeded")
}

/// Creates `n` objects at once (`rh-0`…), and waits until each is rented or refused for a
/// budget; returns them.
async fn create_at_once(world: &World, n: usize) -> Vec<RentedHost> {
    create_all(world, n).await;
    let mut objects = Vec::new();
    for i in 0..n {
        let name = format!("rh-{i}");
        let limit = Duration::from_secs(60);
        objects.push(world.wait_for(&name, limit, "settled", settled).await);
    }
    objects
}

#[tokio::test]
async fn twenty_objects_under_a_budget_for_ten_rent_ten_until_the_limit_is_raised() {
    let world = World::start("rhb-twenty", |_| {}).await;
    apply_budget(&world, "team", "  limit: \"480\"\n");
    let objects = create_at_once(&world, 20).await;
    let rented = objects.iter().filter(|o| host_id(o).is_some()).count();
    assert_eq!(rented, 10);
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 10);
    assert_eq!(world.sim.host_ids().len(), 10);
    let refused: Vec<&RentedHost> = objects.iter().filter(|o| host_id(o).is_none()).collect();
    assert_eq!(refused.len(), 10);
    let month = this_month();
    for o in &refused {
        let e = o.status.as_ref().unwrap().last_error.clone().unwrap();
        assert_eq!(e.reason.as_str(), "BudgetExceeded");
        assert!(
            e.message.contains(&format!(
                "this host costs {DAY_PRICE} CNY; 480.00 of 480.00 spent in {month}"
            )) || e.message.contains("reserved for creates under way"),
            "{}",
            e.message
        );
        assert!(o.status.as_ref().unwrap().create_pending.is_none());
    }
    // The figures settle: everything held was spent.
    let status = settled_status(&world, "team").await;
    assert_eq!(
        (
            status.spent.as_deref(),
            status.reserved.as_deref(),
            status.hosts
        ),
        (Some("480.00"), Some("0.00"), Some(10))
    );
    assert_eq!(status.window.as_deref(), Some(month.as_str()));
    let table = run_ok(
        install_crd()
            .kubectl()
            .args(["get", "rhb", "team", "-n", &world.ns]),
    );
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "LIMIT", "SPENT", "RESERVED", "WINDOW", "HOSTS", "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..6],
        ["team", "480", "480.00", "0.00", month.as_str(), "10"]
    );
    // Metrics come from the operator's cache of budgets, which may trail the read above.
    let labels = format!("namespace=\"{}\",budget=\"team\"", world.ns);
    eventually(Duration::from_secs(10), "the budget's metrics", || async {
        let metrics = world.metrics.render();
        let shown = |line: String| metrics.contains(&line);
        match shown(format!("rentedhost_budget_spent{{{labels}}} 480.0"))
            && shown(format!("rentedhost_budget_limit{{{labels}}} 480.0"))
        {
            true => Ok(()),
            false => Err(metrics),
        }
    })
    .await;
    // A budget never stops what it refuses to grow: nothing was released.
    assert_eq!(world.sim.calls(Endpoint::Delete), 0);
    // Raising the limit is all it takes: the waiting objects rent at once.
    apply_budget(&world, "team", "  limit: 960\n");
    for o in &refused {
        world
            .wait_rented(&o.metadata.name.clone().unwrap(), Duration::from_secs(30))
            .await;
    }
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 20);
    assert_eq!(world.sim.host_ids().len(), 20);
    let start = Instant::now();
    while budget_status(&world, "team").await.spent.as_deref() != Some("960.00") {
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_replicas_and_a_leader_killed_mid_burst_never_spend_past_the_limit() {
    let mut world = World::start("rhb-replicas", |_| {}).await;
    world.kill_controller().await;
    world.start_replica("replica-a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    world.start_replica("replica-b");
    apply_budget(&world, "team", "  limit: \"480.00\"\n");
    // Each create takes 300 ms: the leader dies with creates under way.
    world.sim.inject(
        Endpoint::CreateRent,
        (0..20).map(|_| Fault::Latency(Duration::from_millis(300))),
    );
    create_all(&world, 20).await;
    let start = Instant::now();
    while world.sim.calls(Endpoint::CreateRent) < 3 {
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    world.kill_replica(0).await;
    // Quiet: every object rented or refused, and every host an object's.
    let start = Instant::now();
    let hosts = loop {
        let objects = world.api().list(&Default::default()).await.unwrap().items;
        let rented = objects.iter().filter(|o| host_id(o).is_some()).count();
        let hosts = world.sim.host_ids().len();
        assert!(hosts <= 10, "{hosts} hosts rented under a budget for 10");
        if objects.iter().all(settled) && rented == hosts {
            break hosts;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{rented} rented, {hosts} hosts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(world.sim.calls(Endpoint::CreateRent) <= 10);
    let status = budget_status(&world, "team").await;
    let spent: f64 = status.spent.unwrap().parse().unwrap();
    let reserved: f64 = status.reserved.unwrap().parse().unwrap();
    assert!(spent + reserved <= 480.0, "{spent} + {reserved}");
    assert_eq!(spent, 48.0 * status.hosts.unwrap() as f64);
    println!("{hosts} hosts rented; {spent} spent, {reserved} reserved");
}

#[tokio::test]
async fn a_pool_of_twenty_under_a_budget_for_five_holds_at_five_and_says_why() {
    let world = World::start("rhb-pool", |_| {}).await;
    apply_budget(&world, "team", "  limit: \"240\"\n");
    let pool = serde_json::json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHostPool",
        "metadata": {"name": "render"},
        "spec": {"replicas": 20, "template": {"spec": day_spec()}},
    });
    let out = kubectl_apply(install_crd(), &world.ns, &pool.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pools: Api<rentedhost_operator::api::RentedHostPool> =
        Api::namespaced(world.client.clone(), &world.ns);
    let start = Instant::now();
    let ready = loop {
        let status = pools
            .get("render")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .cloned();
        // The first refusal may meet a create still under way (reserved, not yet spent);
        // the refused children try again when it is spent, and the pool says so.
        if ready
            .as_ref()
            .is_some_and(|c| c.reason == "BudgetExceeded" && c.message.contains("240.00 of"))
        {
            break ready.unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        ready.message.contains("budget") && ready.message.contains("240.00 of 240.00 spent"),
        "{}",
        ready.message
    );
    // Every child without a host says why (each is refused on its own reconcile; on a
    // busy machine that may come after the pool's), and it holds: no more children, no
    // more creates.
    let start = Instant::now();
    loop {
        let children = world.api().list(&Default::default()).await.unwrap().items;
        assert!(children.len() <= 10, "{} children", children.len());
        let waiting: Vec<_> = children
            .iter()
            .filter(|c| host_id(c).is_none())
            .map(|c| (c.name_any(), condition(c, "Ready")))
            .collect();
        let refused = children
            .iter()
            .filter(|c| host_id(c).is_none() && is(c, "Ready", "False", "BudgetExceeded"))
            .count();
        if refused == waiting.len() && children.len() - waiting.len() == 5 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{waiting:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 5);
    assert_eq!(world.sim.host_ids().len(), 5);
    let children = world.api().list(&Default::default()).await.unwrap().items;
    assert!(children.len() <= 10, "{} children", children.len());
    assert!(
        children
            .iter()
            .all(|c| host_id(c).is_some() || is(c, "Ready", "False", "BudgetExceeded")),
        "a child neither rented nor refused for the budget"
    );
}

#[tokio::test]
async fn with_a_budget_an_unknown_price_sends_nothing_until_the_package_list_is_back() {
    let world = World::start("rhb-price", |_| {}).await;
    apply_budget(&world, "team", "  limit: 1000\n");
    world
        .sim
        .inject(Endpoint::Package, (0..10_000).map(|_| Fault::ServerError));
    world.create("rh", day_spec()).await;
    let e = world.failed("rh", "Ready", "PriceUnknown").await;
    assert!(
        e.message.contains("package list cannot be read"),
        "{}",
        e.message
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        0,
        "nothing sent blind"
    );
    world.sim.state().faults.clear();
    world.wait_rented("rh", Duration::from_secs(30)).await;
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
    world
        .wait_for("rh", Duration::from_secs(30), "priced", |o| {
            let price = o.status.as_ref().and_then(|s| s.price.as_ref());
            price.is_some_and(|p| p.prepaid_total == "48")
        })
        .await;
    let start = Instant::now();
    while budget_status(&world, "team").await.spent.as_deref() != Some(DAY_PRICE) {
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Without a budget the price is not needed: deleting it removes the limit.
    budgets(&world)
        .delete("team", &Default::default())
        .await
        .unwrap();
    world
        .sim
        .inject(Endpoint::Package, (0..10_000).map(|_| Fault::ServerError));
    world.create("rh2", day_spec()).await;
    world.wait_rented("rh2", Duration::from_secs(30)).await;
}

/// What a crash leaves held is settled by the budget once its create's recording can no
/// longer land, by what the object records: kept while the object waits for the create,
/// returned when it does not, spent when the object is gone (it may have rented). Not by
/// the wall clock alone: these expired long ago, and still wait until the budget
/// controller has seen them for its gate (3 s here).
#[tokio::test]
async fn the_budget_settles_what_no_operator_settled_by_what_the_object_records() {
    let gate = Duration::from_secs(3);
    let world = World::start("rhb-sweep", |c| c.sweep_seen_for = Some(gate)).await;
    apply_budget(&world, "team", "  limit: 1000\n");
    let start = Instant::now();
    while budget_status(&world, "team").await.window.is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "never refreshed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `waiting` records a create it cannot settle (its credentials are missing); `idle`
    // records none (paused from the start); `ghost` is no object.
    let object = |name: &str, spec: serde_json::Value, annotations: serde_json::Value| {
        serde_json::from_value::<RentedHost>(serde_json::json!({
            "apiVersion": "xuandashi.dev/v1alpha1",
            "kind": "RentedHost",
            "metadata": {"name": name, "annotations": annotations},
            "spec": spec,
        }))
        .unwrap()
    };
    let mut stuck = day_spec();
    stuck["credentialsSecretRef"] = serde_json::json!({"name": "missing"});
    let waiting = world
        .api()
        .create(
            &Default::default(),
            &object("waiting", stuck, serde_json::json!({})),
        )
        .await
        .unwrap();
    let paused = serde_json::json!({rentedhost_operator::api::PAUSED_ANNOTATION: "true"});
    let idle = world
        .api()
        .create(&Default::default(), &object("idle", day_spec(), paused))
        .await
        .unwrap();
    let since = "2026-01-01T00:00:00Z";
    let pending = serde_json::json!({"status": {"createPending": {"since": since}}});
    world
        .api()
        .patch_status(
            "waiting",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&pending),
        )
        .await
        .unwrap();
    let month = this_month();
    let reservation = |object: &str, uid: &str| {
        serde_json::json!({
            "object": object, "uid": uid, "since": since, "amount": "100",
            "window": month, "expires": "2026-01-01T00:10:00Z",
        })
    };
    let held = serde_json::json!({"status": {
        "reserved": "300.00",
        "reservations": [
            reservation("ghost", "ghost-uid"),
            reservation("idle", &idle.metadata.uid.clone().unwrap()),
            reservation("waiting", &waiting.metadata.uid.clone().unwrap()),
        ],
    }});
    // Before the write: the controller cannot see the reservations any earlier.
    let written = Instant::now();
    budgets(&world)
        .patch_status(
            "team",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&held),
        )
        .await
        .unwrap();
    let status = loop {
        let status = budget_status(&world, "team").await;
        if status.reservations.len() != 3 {
            assert!(
                written.elapsed() >= gate,
                "swept {:?} after the write, before the gate: {status:?}",
                written.elapsed()
            );
        }
        if status.reservations.len() == 1 {
            break status;
        }
        assert!(written.elapsed() < Duration::from_secs(30), "{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        status.reservations[0].object, "waiting",
        "its create may rent"
    );
    assert_eq!(status.reserved.as_deref(), Some("100.00"));
    assert_eq!(
        (status.spent.as_deref(), status.hosts),
        (Some("100.00"), Some(1)),
        "the ghost's spent, idle's returned"
    );
}

/// Budgets that cannot be read (RBAC without them) stop every create, and `/readyz` says
/// which cache waits; once they can be read, the object rents.
#[tokio::test]
async fn without_budgets_to_read_nothing_is_created_and_readyz_says_why() {
    let mut world = World::start("rhb-rbac", |_| {}).await;
    world.kill_controller().await;
    let plane = install_crd();
    let role = |budgets: &str| {
        let rules = format!(
            r#"  - apiGroups: ["xuandashi.dev"]
    resources: ["rentedhosts", "rentedhosts/status"{budgets}]
    verbs: ["get", "list", "watch", "patch", "update"]
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get", "list", "watch", "create", "patch"]
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]"#
        );
        crate::support::role_for_user("rho-nobudgets", &rules)
    };
    let applied = kubectl_apply(plane, &world.ns, &role(""));
    assert!(applied.status.success(), "{applied:?}");
    world.start_controller_as(plane.client_as("rho-nobudgets").await);
    world.create("rh", day_spec()).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        0,
        "no budget read, no create"
    );
    let why = world.metrics.readiness.check().unwrap_err();
    assert!(why.contains("RentedHostBudgets"), "{why}");
    let applied = kubectl_apply(
        plane,
        &world.ns,
        &role(r#", "rentedhostbudgets", "rentedhostbudgets/status""#),
    );
    assert!(applied.status.success(), "{applied:?}");
    world.wait_rented("rh", Duration::from_secs(60)).await;
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
}

/// A lost create that a person says rented nothing still counts: a person's word is no
/// proof that nothing bills, so its reservation is spent, not returned; the new create
/// reserves its own.
#[tokio::test]
async fn a_create_a_person_says_rented_nothing_is_spent_not_returned() {
    let mut world = World::start("rhb-word", |_| {}).await;
    apply_budget(&world, "team", "  limit: 21600\n");
    crate::create::kill_during_create(&mut world, "rh").await;
    // Someone rents the same package by hand meanwhile: the operator cannot pair.
    let body = serde_json::json!({"packageId": "teTapaSUFq", "imageId": "507", "periodNumber": 5, "periodType": 3});
    assert_eq!(world.sim.state().create_rent("demo-account", &body).code, 0);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    world.start_controller();
    let obj = world
        .wait_condition("rh", "Ready", "False", "CreateOutcomeUnknown")
        .await;
    let status = budget_status(&world, "team").await;
    assert_eq!(
        (status.spent.as_deref(), status.reserved.as_deref()),
        (Some("0.00"), Some("7200.00")),
        "held while its outcome is unknown"
    );
    let since = obj.status.unwrap().create_pending.unwrap().since;
    world
        .annotate("rh", "xuandashi.dev/create-not-rented", &since)
        .await;
    world.wait_rented("rh", Duration::from_secs(30)).await;
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 2);
    let status = settled_status(&world, "team").await;
    assert_eq!(
        (status.spent.as_deref(), status.hosts),
        (Some("14400.00"), Some(2)),
        "the create given up on a person's word, and the new one"
    );
}
