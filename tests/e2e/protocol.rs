//! The never-rent-twice protocol under random interleavings: for each seed, the real
//! controller, the real API server and the simulator over HTTP go through a random mix of
//! many objects of one spec, answers lost after commit or delayed past other creates,
//! spec edits, `spec.hostId` and stale annotations during pending creates, deletions
//! during pending creates, controller kills, (every other seed) two replicas under leader
//! election whose leader is killed, and (every third seed) watches that run up to 1.5 s
//! behind the API server, so that every decision starts from a stale cache; observe-only
//! objects of hosts that were there before, ids with a stray character (refused), a pool
//! scaled up and down, and (every fourth seed with one controller) the run's end by
//! deleting the namespace, the controller down for a while meanwhile. Two seeds in five
//! limit the demo package's capacity and give every spec fallback packages (one of another
//! type, which 7005 skips, on some); every third seed puts a budget on the namespace, with
//! room for a few hosts only, raised now and then. After each run: every object has exactly
//! one host (or, under a budget, was refused for it), no two share one, every host on the
//! account belongs to an object or was there before, every host createRent made was counted
//! in the budget and together they cost no more than its limit, and once everything is
//! deleted no host made by the run remains and no observed host was released.
//!
//! `PROTOCOL_SEEDS=a..b` runs those seeds (default: 20 from a random base, printed).

use crate::support::operator::{World, demo_spec, host_id, is};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rust_decimal::Decimal;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use xds_simulator::Endpoint;
use xds_simulator::{Fault, Freedom};

const AT_ONCE: usize = 4;

fn seeds() -> Vec<u64> {
    if let Ok(range) = std::env::var("PROTOCOL_SEEDS") {
        let (a, b) = range.split_once("..").expect("PROTOCOL_SEEDS=first..end");
        return (a.parse().unwrap()..b.parse().unwrap()).collect();
    }
    let base = rand::random_range(0..1_000_000u64);
    (base..base + 20).collect()
}

/// What one seed did, for the record.
#[derive(Default)]
struct Summary {
    replicated: bool,
    watch_lag: Option<Duration>,
    objects: usize,
    deleted: usize,
    kills: usize,
    refused_edits: usize,
    creates: u64,
    observers: usize,
    pool_scales: usize,
    namespace_deleted: bool,
    fallbacks: bool,
    /// The budget's final limit, and what the hosts createRent made cost.
    budget: Option<(u64, Decimal)>,
    refused_for_budget: usize,
}

/// The demo package (2 CNY an hour), its fallback (0.4), and a package of another type
/// than the demo image (createRent answers 7005).
const A: &str = "teTapaSUFq";
const B: &str = "kQvBmLtRzA";
const OTHER_TYPE: &str = "pLnBaRexWq";

/// What a host of `package` costs for the demo spec's 5 months.
fn cost(package: &str) -> Decimal {
    let hourly = match package {
        A => Decimal::from(2),
        B => Decimal::new(4, 1),
        other => panic!("no host of {other} can be rented"),
    };
    hourly * Decimal::from(720 * 5)
}

/// The run's spec: the demo's, with fallbacks on the seeds that have them.
fn spec_of(fallbacks: Option<&[&str]>) -> serde_json::Value {
    let mut spec = demo_spec();
    if let Some(packages) = fallbacks {
        spec["fallbackPackageIds"] = serde_json::json!(packages);
    }
    spec
}

/// Whether an object has settled under a budget without a host.
fn refused_for_budget(obj: &rentedhost_operator::api::RentedHost) -> bool {
    is(obj, "Ready", "False", "BudgetExceeded")
}

async fn set_budget(world: &World, limit: u64) {
    let budget = serde_json::json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHostBudget",
        "metadata": {"name": "run"},
        "spec": {"limit": limit.to_string()},
    });
    let api: kube::Api<rentedhost_operator::api::RentedHostBudget> =
        kube::Api::namespaced(world.client.clone(), &world.ns);
    api.patch(
        "run",
        &kube::api::PatchParams::apply("protocol").force(),
        &kube::api::Patch::Apply(&budget),
    )
    .await
    .unwrap();
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Waits (a minute at most) until every one of `names` is gone.
async fn all_gone(world: &World, names: &[String], seed: u64) -> Result<(), String> {
    for name in names {
        let start = Instant::now();
        while world.api().get_opt(name).await.unwrap().is_some() {
            ensure!(
                start.elapsed() < Duration::from_secs(60),
                "seed {seed}: {name} not gone after 60 s"
            );
            tokio::time::sleep(ms(100)).await;
        }
    }
    Ok(())
}

const POOL: &str = "pool";

fn pools(world: &World) -> kube::Api<rentedhost_operator::api::RentedHostPool> {
    kube::Api::namespaced(world.client.clone(), &world.ns)
}

/// Creates the run's pool with `replicas` of `spec`, or scales it to them.
async fn scale_pool(world: &World, replicas: u32, exists: bool, spec: &serde_json::Value) {
    if exists {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        pools(world)
            .patch(POOL, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .unwrap();
        return;
    }
    let pool = serde_json::from_value(serde_json::json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHostPool",
        "metadata": {"name": POOL},
        "spec": {"replicas": replicas, "template": {"spec": spec}},
    }))
    .unwrap();
    pools(world)
        .create(&Default::default(), &pool)
        .await
        .unwrap();
}

/// The pool's children once there are `replicas` of them, each with a host (a minute at
/// most); under a budget, those the pool has while it holds, each with a host or refused.
async fn pool_settled(
    world: &World,
    replicas: u32,
    budgeted: bool,
    seed: u64,
) -> Result<Vec<String>, String> {
    let selector = format!("{}={POOL}", rentedhost_operator::api::POOL_LABEL);
    let start = Instant::now();
    loop {
        let params = kube::api::ListParams::default().labels(&selector);
        let kids = world.api().list(&params).await.unwrap().items;
        let live: Vec<_> = kids
            .iter()
            .filter(|k| k.metadata.deletion_timestamp.is_none())
            .collect();
        if kids.len() == replicas as usize && live.iter().all(|k| host_id(k).is_some()) {
            return Ok(kids.iter().map(kube::ResourceExt::name_any).collect());
        }
        let pool = pools(world).get(POOL).await.unwrap();
        let held = pool
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.type_ == "Ready" && c.reason == "BudgetExceeded");
        let settled = |k: &&rentedhost_operator::api::RentedHost| {
            host_id(k).is_some() || refused_for_budget(k)
        };
        if budgeted
            && (kids.len() == replicas as usize || (held && kids.len() < replicas as usize))
            && kids.len() == live.len()
            && live.iter().all(settled)
        {
            return Ok(kids.iter().map(kube::ResourceExt::name_any).collect());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "seed {seed}: the pool has not settled at {replicas} after 60 s: {} children",
            kids.len()
        );
        tokio::time::sleep(ms(200)).await;
    }
}

/// Under a budget an object refused now may rent once another create's reservation is
/// returned: waits (90 s at most) until nothing moves: no create pending, every live object
/// rented or refused, and every host the run made an object's.
async fn quiet_under_budget(
    world: &World,
    live: &[String],
    before: &HashSet<String>,
    seed: u64,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let objects = world.api().list(&Default::default()).await.unwrap().items;
        let pending = objects.iter().any(|o| {
            o.status
                .as_ref()
                .is_some_and(|s| s.create_pending.is_some())
        });
        let settled = live.iter().all(|name| {
            objects
                .iter()
                .find(|o| o.metadata.name.as_deref() == Some(name))
                .is_some_and(|o| host_id(o).is_some() || refused_for_budget(o))
        });
        let claimed: HashSet<String> = objects.iter().filter_map(host_id).collect();
        let unclaimed: Vec<String> = world
            .sim
            .host_ids()
            .into_iter()
            .filter(|id| !before.contains(id) && !claimed.contains(id))
            .collect();
        if !pending && settled && unclaimed.is_empty() {
            return Ok(());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(90),
            "seed {seed}: not quiet under the budget after 90 s: pending {pending}, settled {settled}, unclaimed hosts {unclaimed:?}"
        );
        tokio::time::sleep(ms(200)).await;
    }
}

async fn run_seed(seed: u64) -> Result<Summary, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Every other seed runs two replicas under leader election instead of one controller,
    // and a kill stops one of them (the leader, often).
    let replicated = seed.is_multiple_of(2);
    // Every third seed's controllers see their watches up to 1.5 s late (stale caches).
    let lag = seed
        .is_multiple_of(3)
        .then(|| ms(rng.random_range(200..1500)));
    let mut world = World::start(&format!("proto-{seed}"), |_| {}).await;
    let mut next_replica = 0;
    if let Some(lag) = lag {
        world.lag_watches(lag).await;
    }
    if replicated || lag.is_some() {
        world.kill_controller().await;
    }
    if !replicated && lag.is_some() {
        world.start_controller();
    }
    if replicated {
        for _ in 0..2 {
            world.start_replica(&format!("replica-{next_replica}"));
            next_replica += 1;
        }
    }
    world.sim.state().freedom = Freedom::from_seed(seed);
    // Two seeds in five: the demo package runs out, and every spec falls back (through a
    // package of another type, on some).
    let fallbacks: Option<&[&str]> = match seed % 5 {
        0 => Some(&[B]),
        1 => Some(&[OTHER_TYPE, B]),
        _ => None,
    };
    if fallbacks.is_some() {
        world.sim.set_capacity(A, rng.random_range(0..4));
    }
    let spec = spec_of(fallbacks);
    // Every third seed: a budget with room for a few demo hosts.
    let budgeted = seed % 3 == 2;
    let mut limit = 7200 * rng.random_range(1..5u64);
    if budgeted {
        set_budget(&world, limit).await;
    }
    let before: HashSet<String> = world
        .sim
        .state()
        .preload_hosts("demo-account", rng.random_range(0..35))
        .into_iter()
        .collect();
    let preloaded: Vec<String> = before.iter().cloned().collect();
    let faults: Vec<Fault> = (0..40)
        .map(|_| match rng.random_range(0..100) {
            0..20 => Fault::DropAfterCommit,
            20..30 => Fault::ServerErrorAfterCommit,
            30..38 => Fault::NonJson,
            38..45 => Fault::ServerError,
            _ => Fault::Latency(ms(rng.random_range(0..2500))),
        })
        .collect();
    world.sim.inject(Endpoint::CreateRent, faults);
    let mut summary = Summary {
        replicated,
        watch_lag: lag,
        fallbacks: fallbacks.is_some(),
        objects: rng.random_range(3..8),
        ..Summary::default()
    };
    let mut created = 0;
    let mut live: Vec<String> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    let mut named: HashSet<String> = HashSet::new();
    // Observe-only objects, and the preloaded host each shows (never to be released).
    let mut observers: Vec<(String, String)> = Vec::new();
    let mut pool: Option<u32> = None;
    for _ in 0..rng.random_range(8..16) {
        let pick = |rng: &mut StdRng, live: &[String]| {
            (!live.is_empty()).then(|| live[rng.random_range(0..live.len())].clone())
        };
        match rng.random_range(0..100) {
            0..35 if created < summary.objects => {
                let name = format!("rh-{created}");
                world.create(&name, spec.clone()).await;
                live.push(name);
                created += 1;
            }
            35..45 => {
                if let Some(name) = pick(&mut rng, &live) {
                    let patch = serde_json::json!({"spec": {"packageId": B}});
                    if world.merge(&name, patch).await.is_err() {
                        summary.refused_edits += 1;
                    }
                }
            }
            45..55 => {
                // Each preloaded host is named by one object at most: two objects naming
                // the same host is refused for one of them (HostClaimed), by design.
                let free: Vec<&String> =
                    preloaded.iter().filter(|id| !named.contains(*id)).collect();
                if let (Some(name), false) = (pick(&mut rng, &live), free.is_empty()) {
                    let id = free[rng.random_range(0..free.len())].clone();
                    named.insert(id.clone());
                    let patch = serde_json::json!({"spec": {"hostId": id}});
                    if world.merge(&name, patch).await.is_err() {
                        summary.refused_edits += 1;
                    }
                }
            }
            55..65 => {
                if let Some(name) = pick(&mut rng, &live) {
                    let stale = serde_json::json!({"metadata": {"annotations": {"xuandashi.dev/create-not-rented": "true"}}});
                    world.merge(&name, stale).await.ok();
                }
            }
            65..75 => {
                if let Some(name) = pick(&mut rng, &live) {
                    world.api().delete(&name, &Default::default()).await.ok();
                    live.retain(|n| *n != name);
                    deleted.push(name);
                }
            }
            75..85 if replicated => {
                let victim = rng.random_range(0..world.replica_count());
                world.kill_replica(victim).await;
                tokio::time::sleep(ms(rng.random_range(0..400))).await;
                world.start_replica(&format!("replica-{next_replica}"));
                next_replica += 1;
                summary.kills += 1;
            }
            75..85 => {
                world.kill_controller().await;
                tokio::time::sleep(ms(rng.random_range(0..400))).await;
                world.start_controller();
                summary.kills += 1;
            }
            85..91 => {
                let replicas = rng.random_range(0..4);
                scale_pool(&world, replicas, pool.is_some(), &spec).await;
                pool = Some(replicas);
                summary.pool_scales += 1;
            }
            91..96 => {
                let free: Vec<&String> =
                    preloaded.iter().filter(|id| !named.contains(*id)).collect();
                if !free.is_empty() {
                    let id = free[rng.random_range(0..free.len())].clone();
                    named.insert(id.clone());
                    let name = format!("observer-{}", observers.len());
                    let mut spec = demo_spec();
                    spec["hostId"] = serde_json::json!(id);
                    spec["managementPolicy"] = serde_json::json!("ObserveOnly");
                    world.create(&name, spec).await;
                    observers.push((name, id));
                }
            }
            96..98 if budgeted => {
                limit += 7200;
                set_budget(&world, limit).await;
            }
            _ => {
                // An id with a stray character, on a live object or a new one: refused.
                let stray = ["ID.", "ID\u{200b}", "/ID", " ID"][rng.random_range(0..4)];
                let id = preloaded
                    .first()
                    .map_or(stray.to_string(), |p| stray.replace("ID", p));
                let patch = serde_json::json!({"spec": {"hostId": id}});
                if let Some(name) = pick(&mut rng, &live) {
                    ensure!(
                        world.merge(&name, patch).await.is_err(),
                        "seed {seed}: spec.hostId {id:?} accepted on {name}"
                    );
                    summary.refused_edits += 1;
                }
            }
        }
        tokio::time::sleep(ms(rng.random_range(0..300))).await;
    }
    while created < summary.objects {
        let name = format!("rh-{created}");
        world.create(&name, spec.clone()).await;
        live.push(name);
        created += 1;
    }
    summary.deleted = deleted.len();
    summary.observers = observers.len();
    // Settle: deleted objects gone (their hosts released), live ones rented.
    all_gone(&world, &deleted, seed).await?;
    let mut owners: HashMap<String, String> = HashMap::new();
    if let Some(replicas) = pool {
        live.extend(pool_settled(&world, replicas, budgeted, seed).await?);
    }
    for (name, id) in &observers {
        let start = Instant::now();
        let obj = loop {
            let obj = world.get(name).await;
            if host_id(&obj).is_some() {
                break obj;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(60),
                "seed {seed}: observer {name} does not show {id} after 60 s: {:?}",
                obj.status
            );
            tokio::time::sleep(ms(100)).await;
        };
        ensure!(
            host_id(&obj).as_deref() == Some(id.as_str()),
            "seed {seed}: observer {name} shows another host than {id}: {:?}",
            obj.status
        );
        if let Some(other) = owners.insert(id.clone(), name.clone()) {
            return Err(format!("seed {seed}: {name} and {other} share host {id}"));
        }
    }
    if budgeted {
        quiet_under_budget(&world, &live, &before, seed).await?;
    }
    for name in &live {
        let start = Instant::now();
        let obj = loop {
            let obj = world.get(name).await;
            if host_id(&obj).is_some() || is(&obj, "Ready", "False", "CreateOutcomeUnknown") {
                break obj;
            }
            if budgeted && refused_for_budget(&obj) {
                break obj;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(60),
                "seed {seed}: {name} not rented after 60 s: {:?}",
                obj.status
            );
            tokio::time::sleep(ms(100)).await;
        };
        if budgeted && host_id(&obj).is_none() && refused_for_budget(&obj) {
            summary.refused_for_budget += 1;
            continue;
        }
        let id = host_id(&obj).ok_or_else(|| {
            format!(
                "seed {seed}: {name} asked a person although nobody else rents: {:?}",
                obj.status
            )
        })?;
        if let Some(other) = owners.insert(id.clone(), name.clone()) {
            return Err(format!("seed {seed}: {name} and {other} share host {id}"));
        }
    }
    let hosts: HashSet<String> = world.sim.host_ids().into_iter().collect();
    let orphans: Vec<&String> = hosts
        .iter()
        .filter(|id| !before.contains(*id) && !owners.contains_key(*id))
        .collect();
    ensure!(
        orphans.is_empty(),
        "seed {seed}: hosts billed with no object: {orphans:?}"
    );
    for id in owners.keys() {
        ensure!(
            hosts.contains(id),
            "seed {seed}: an object claims host {id}, which the account does not have"
        );
    }
    summary.creates = world.sim.calls(Endpoint::CreateRent);
    if budgeted {
        // Every host createRent made cost what its package does; together no more than
        // the limit, and each was held or spent in the budget.
        let rented = world.sim.state().rented.clone();
        let total: Decimal = rented.iter().map(|(_, package)| cost(package)).sum();
        ensure!(
            total <= Decimal::from(limit),
            "seed {seed}: hosts worth {total} CNY rented under a budget of {limit}: {rented:?}"
        );
        let api: kube::Api<rentedhost_operator::api::RentedHostBudget> =
            kube::Api::namespaced(world.client.clone(), &world.ns);
        let start = Instant::now();
        loop {
            let status = api.get("run").await.unwrap().status.unwrap_or_default();
            let read = |a: Option<String>| {
                a.and_then(|a| a.parse::<Decimal>().ok())
                    .unwrap_or_default()
            };
            let (spent, reserved) = (read(status.spent), read(status.reserved));
            if total <= spent + reserved {
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(30),
                "seed {seed}: hosts worth {total} CNY rented, the budget counts {spent} spent and {reserved} reserved"
            );
            tokio::time::sleep(ms(200)).await;
        }
        summary.budget = Some((limit, total));
    }
    // Delete everything: no host made by the run may remain.
    summary.namespace_deleted = !replicated && seed % 4 == 1;
    if summary.namespace_deleted {
        delete_namespace(&mut world, &mut rng, seed).await?;
    } else {
        if pool.is_some() {
            pools(&world).delete(POOL, &Default::default()).await.ok();
        }
        let observed: Vec<String> = observers.iter().map(|(n, _)| n.clone()).collect();
        for name in live.iter().chain(&observed) {
            world.api().delete(name, &Default::default()).await.ok();
        }
        all_gone(&world, &live, seed).await?;
        all_gone(&world, &observed, seed).await?;
    }
    let left = world.hosts_not_in(&before);
    ensure!(
        left.is_empty(),
        "seed {seed}: hosts of the run left after deleting everything: {left:?}"
    );
    let hosts: HashSet<String> = world.sim.host_ids().into_iter().collect();
    for (name, id) in &observers {
        ensure!(
            hosts.contains(id),
            "seed {seed}: {id}, only observed by {name}, was released"
        );
    }
    Ok(summary)
}

/// The end of a run by `kubectl delete namespace`, with the controller down for a while as
/// it begins: the namespace goes (every host released first, the credentials kept until
/// then), within two minutes.
async fn delete_namespace(world: &mut World, rng: &mut StdRng, seed: u64) -> Result<(), String> {
    let down = rng.random_bool(0.5);
    if down {
        world.kill_controller().await;
    }
    world.delete_namespace().await;
    if down {
        tokio::time::sleep(ms(rng.random_range(0..4000))).await;
        world.start_controller();
    }
    let gone = world.namespace_gone(Duration::from_secs(120)).await;
    gone.map(|_| ()).map_err(|e| format!("seed {seed}: {e}"))
}

#[tokio::test]
async fn random_interleavings_never_rent_twice() {
    let seeds = seeds();
    println!(
        "protocol seeds {}..{} (PROTOCOL_SEEDS=a..b repeats a run)",
        seeds[0],
        seeds[seeds.len() - 1] + 1
    );
    let started = Instant::now();
    let mut failures = Vec::new();
    for chunk in seeds.chunks(AT_ONCE) {
        let runs = chunk.iter().map(|seed| {
            let seed = *seed;
            tokio::spawn(async move { (seed, run_seed(seed).await) })
        });
        for run in futures::future::join_all(runs).await {
            match run {
                Ok((seed, Ok(s))) => println!(
                    "seed {seed}: ok: {} objects, {} deleted early, {} kills, {} edits refused, {} observers, {} pool scales, {} createRent calls, {}, watch lag {:?}{}{}{}",
                    s.objects,
                    s.deleted,
                    s.kills,
                    s.refused_edits,
                    s.observers,
                    s.pool_scales,
                    s.creates,
                    if s.replicated {
                        "2 replicas"
                    } else {
                        "1 controller"
                    },
                    s.watch_lag.unwrap_or_default(),
                    if s.namespace_deleted {
                        ", ended by deleting the namespace"
                    } else {
                        ""
                    },
                    if s.fallbacks {
                        ", fallback packages"
                    } else {
                        ""
                    },
                    match s.budget {
                        Some((limit, total)) => format!(
                            ", budget {limit}: {total} rented, {} refused",
                            s.refused_for_budget
                        ),
                        None => String::new(),
                    }
                ),
                Ok((seed, Err(e))) => {
                    println!("seed {seed}: FAILED {e}");
                    failures.push(e);
                }
                Err(panic) => failures.push(format!("a seed panicked: {panic}")),
            }
        }
    }
    println!(
        "{} seeds in {:.0?}: {} failed",
        seeds.len(),
        started.elapsed(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
