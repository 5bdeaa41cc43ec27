//! RentedHostPool: `kubectl scale` grows and shrinks a fleet, each child renting once and
//! releasing its host when it goes; creates back off as one when the provider refuses.

use crate::support::operator::{World, demo_spec, host_id, is};
use crate::support::{install_crd, kubectl_apply, run_ok};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use rentedhost_operator::api::{POOL_LABEL, RentedHost, RentedHostPool};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use xds_simulator::Endpoint;

const LIMIT: Duration = Duration::from_secs(60);

fn manifest(name: &str, replicas: u32) -> String {
    let spec = serde_json::json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHostPool",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "template": {
            "metadata": {"labels": {"team": "render"}},
            "spec": demo_spec(),
        }},
    });
    serde_json::to_string(&spec).unwrap()
}

/// `kubectl apply` of a pool of `replicas` demo hosts, which must be accepted.
fn apply_pool(world: &World, name: &str, replicas: u32) {
    let out = kubectl_apply(install_crd(), &world.ns, &manifest(name, replicas));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pools(world: &World) -> Api<RentedHostPool> {
    Api::namespaced(world.client.clone(), &world.ns)
}

async fn children(world: &World, pool: &str) -> Vec<RentedHost> {
    let selector = format!("{POOL_LABEL}={pool}");
    world
        .api()
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}

fn kubectl_scale(world: &World, pool: &str, replicas: u32) {
    run_ok(install_crd().kubectl().args([
        "scale",
        &format!("rhp/{pool}"),
        &format!("--replicas={replicas}"),
        "-n",
        &world.ns,
    ]));
}

/// Waits until the pool has exactly `n` children, all Ready, and says so in its status.
async fn settled(world: &World, pool: &str, n: usize) -> Vec<RentedHost> {
    let start = Instant::now();
    loop {
        let kids = children(world, pool).await;
        let ready = kids
            .iter()
            .filter(|c| is(c, "Ready", "True", "Running"))
            .count();
        let status = pools(world)
            .get(pool)
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if kids.len() == n
            && ready == n
            && status.ready_replicas as usize == n
            && status.replicas as usize == n
        {
            return kids;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{pool}: {} children, {ready} ready, status {status:?}",
            kids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_pool(world: &World, name: &str, done: impl Fn(&RentedHostPool) -> bool) {
    let start = Instant::now();
    loop {
        let pool = pools(world).get(name).await.unwrap();
        if done(&pool) {
            return;
        }
        assert!(start.elapsed() < LIMIT, "{name}: {:?}", pool.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn kubectl_scale_grows_a_pool_to_20_and_shrinks_it_to_5_then_0() {
    let world = World::start("pool", |_| {}).await;
    let plane = install_crd();
    apply_pool(&world, "render", 0);
    settled(&world, "render", 0).await;

    let grow = Instant::now();
    kubectl_scale(&world, "render", 20);
    let kids = settled(&world, "render", 20).await;
    println!("0 → 20 Ready in {:?}", grow.elapsed());
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        20,
        "one createRent per child"
    );
    let hosts: HashSet<String> = kids.iter().filter_map(host_id).collect();
    assert_eq!(hosts.len(), 20, "20 hosts, none shared");
    assert!(
        kids.iter()
            .all(|c| c.labels().get("team").map(String::as_str) == Some("render"))
    );
    let pool = pools(&world).get("render").await.unwrap();
    let status = pool.status.unwrap();
    let listed: HashSet<String> = status.host_ids.iter().cloned().collect();
    assert_eq!(listed, hosts, "status lists the hosts");

    // The scale subresource, as a HorizontalPodAutoscaler reads it.
    let scale = run_ok(plane.kubectl().args([
        "get",
        "--raw",
        &format!(
            "/apis/xuandashi.dev/v1alpha1/namespaces/{}/rentedhostpools/render/scale",
            world.ns
        ),
    ]));
    let scale: serde_json::Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["spec"]["replicas"], 20);
    assert_eq!(scale["status"]["replicas"], 20);
    assert_eq!(scale["status"]["selector"], "xuandashi.dev/pool=render");
    let table = run_ok(plane.kubectl().args(["get", "rhp", "-n", &world.ns]));
    println!("{table}");
    assert!(
        table.contains("DESIRED") && table.contains("READY"),
        "{table}"
    );

    let shrink = Instant::now();
    // Oldest first: by creation time (to the second), then by the index in the name.
    let oldest: Vec<String> = {
        let mut kids = kids.clone();
        kids.sort_by_key(|c| {
            let index: u32 = c.name_any().rsplit('-').next().unwrap().parse().unwrap();
            (c.metadata.creation_timestamp.clone().map(|t| t.0), index)
        });
        kids.iter().take(5).map(|c| c.name_any()).collect()
    };
    kubectl_scale(&world, "render", 5);
    let kept = settled(&world, "render", 5).await;
    println!("20 → 5 in {:?}", shrink.elapsed());
    assert_eq!(world.sim.calls(Endpoint::Delete), 15, "15 hosts released");
    let kept_names: HashSet<String> = kept.iter().map(|c| c.name_any()).collect();
    assert_eq!(
        kept_names,
        oldest.into_iter().collect(),
        "the newest went first"
    );
    assert_eq!(world.sim.host_ids().len(), 5);

    kubectl_scale(&world, "render", 0);
    settled(&world, "render", 0).await;
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        20,
        "never rented again"
    );
    assert_eq!(world.sim.calls(Endpoint::Delete), 20, "every host released");
    assert!(world.sim.host_ids().is_empty(), "nothing left billing");
    world.wait_events("render", "ScaledDown", 1).await;
}

#[tokio::test]
async fn a_pool_refused_for_capacity_backs_off_as_one_then_fills_and_its_deletion_releases_all() {
    let world = World::start("pool-6002", |_| {}).await;
    world.sim.set_capacity("teTapaSUFq", 0);
    apply_pool(&world, "gpu", 20);
    wait_for_pool(&world, "gpu", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == "InsufficientResources")
        })
    })
    .await;
    // The retry table at 1/50: one child alone would retry about 5 times in 6 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let refused = world.sim.calls(Endpoint::CreateRent);
    let kids = children(&world, "gpu").await;
    println!(
        "capacity 0: {refused} createRent calls in about 6 s, {} children",
        kids.len()
    );
    assert_eq!(kids.len(), 5, "no new children while refused");
    assert!(
        refused <= 14,
        "{refused} createRent calls: the children must retry as one"
    );

    world.sim.set_capacity("teTapaSUFq", 1000);
    let filled = Instant::now();
    let kids = settled(&world, "gpu", 20).await;
    println!("filled in {:?} once capacity came back", filled.elapsed());
    let hosts: HashSet<String> = kids.iter().filter_map(host_id).collect();
    assert_eq!(hosts.len(), 20);
    assert_eq!(world.sim.host_ids().len(), 20, "exactly one host per child");

    // Deleting the pool deletes its children (garbage collection), which release their hosts.
    pools(&world)
        .delete("gpu", &DeleteParams::foreground())
        .await
        .unwrap();
    let start = Instant::now();
    while !children(&world, "gpu").await.is_empty() || !world.sim.host_ids().is_empty() {
        assert!(start.elapsed() < LIMIT, "children or hosts left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(world.sim.calls(Endpoint::Delete), 20);
}

#[tokio::test]
async fn a_pool_template_with_a_host_id_is_refused() {
    let world = World::start("pool-invalid", |_| {}).await;
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest("bad", 2)).unwrap();
    manifest["spec"]["template"]["spec"]["hostId"] = "abc".into();
    let out = kubectl_apply(install_crd(), &world.ns, &manifest.to_string());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("spec.template.spec.hostId"), "{stderr}");
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rentedhostpool.yaml");
    let out = install_crd()
        .kubectl()
        .args(["apply", "--dry-run=server", "-n", &world.ns, "-f"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the example is valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_pool_deleted_with_orphan_cascade_and_applied_again_adopts_its_children() {
    let world = World::start("pool-adopt", |_| {}).await;
    let plane = install_crd();
    apply_pool(&world, "farm", 2);
    let before: HashSet<String> = settled(&world, "farm", 2)
        .await
        .iter()
        .filter_map(host_id)
        .collect();
    run_ok(
        plane
            .kubectl()
            .args(["delete", "rhp", "farm", "--cascade=orphan", "-n", &world.ns]),
    );
    // The garbage collector takes the pool's owner reference off the children.
    let start = Instant::now();
    while children(&world, "farm")
        .await
        .iter()
        .any(|c| !c.owner_references().is_empty())
    {
        assert!(start.elapsed() < LIMIT, "children keep their owner");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    apply_pool(&world, "farm", 2);
    let kids = settled(&world, "farm", 2).await;
    let pool = pools(&world).get("farm").await.unwrap();
    assert!(kids.iter().all(|c| {
        c.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == pool.uid().as_ref())
    }));
    let after: HashSet<String> = kids.iter().filter_map(host_id).collect();
    assert_eq!(before, after, "the same hosts");
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        2,
        "nothing rented anew"
    );
}

#[tokio::test]
async fn a_child_whose_pool_label_is_removed_is_labelled_again_not_replaced() {
    let world = World::start("pool-relabel", |_| {}).await;
    let plane = install_crd();
    apply_pool(&world, "farm", 2);
    settled(&world, "farm", 2).await;
    run_ok(plane.kubectl().args([
        "label",
        "rh",
        "farm-0",
        &format!("{POOL_LABEL}-"),
        "-n",
        &world.ns,
    ]));
    let start = Instant::now();
    loop {
        let obj = world.get("farm-0").await;
        if obj.labels().get(POOL_LABEL).map(String::as_str) == Some("farm") {
            break;
        }
        assert!(start.elapsed() < LIMIT, "farm-0 not labelled again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    settled(&world, "farm", 2).await;
    assert_eq!(
        world
            .api()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        2,
        "no replacement child"
    );
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        2,
        "no host rented for it"
    );
}

/// Issue 22, finding 4: a scale-down decided on replicas 5 went on deleting after the pool
/// was scaled back to 20, releasing hosts only to rent them again. Each delete is now
/// checked against the pool as it is: at most the one delete already sent goes through.
#[tokio::test]
async fn scaling_20_to_5_to_20_deletes_nothing_on_the_stale_generation() {
    let mut world = World::start("pool-flap", |_| {}).await;
    apply_pool(&world, "flap", 20);
    let first: HashSet<String> = settled(&world, "flap", 20)
        .await
        .iter()
        .filter_map(|c| c.uid())
        .collect();
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 20);
    let hold = world
        .restart_holding(http::Method::DELETE, "/rentedhosts/")
        .await;
    hold.arm();
    kubectl_scale(&world, "flap", 5);
    let start = Instant::now();
    while hold.held() == 0 {
        assert!(
            start.elapsed() < LIMIT,
            "no child deleted for the scale-down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The pool's decision (replicas 5) waits at its first delete; the user changes their mind.
    kubectl_scale(&world, "flap", 20);
    hold.open();
    // A child deleted on the stale decision lingers, still Ready, until its host is released:
    // count the children replaced once none is terminating and the pool has settled again.
    let start = Instant::now();
    let last = loop {
        let kids = settled(&world, "flap", 20).await;
        if kids.iter().all(|c| c.metadata.deletion_timestamp.is_none()) {
            break kids;
        }
        assert!(start.elapsed() < LIMIT, "children still terminating");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let replaced = first
        .iter()
        .filter(|uid| !last.iter().any(|c| c.uid().as_ref() == Some(*uid)))
        .count();
    let deletes = world.sim.calls(Endpoint::Delete);
    let creates = world.sim.calls(Endpoint::CreateRent);
    println!(
        "20 → 5 → 20: {replaced} children replaced, {deletes} hosts released, {creates} createRent calls"
    );
    assert!(
        replaced <= 1,
        "{replaced} children replaced, {deletes} hosts released for a scale-down that was taken back"
    );
    assert_eq!(
        deletes, replaced as u64,
        "each child replaced released its host"
    );
    assert_eq!(creates, 20 + deletes, "each release rented again, no more");
    assert_eq!(world.sim.host_ids().len(), 20);
}
