//! Chaos on a control plane of the test's own: objects created while a fifth of provider
//! calls fail in varied ways (lost answers after committed creates among them), tokens expire
//! every few seconds and 6005 comes in bursts; the controller is killed at random moments and
//! restarted, the kube-apiserver is restarted once and etcd is paused once. Afterwards every
//! object has exactly one host, no host on the account is unclaimed, every object is Ready,
//! and deleting them all leaves no host and no finalizer. `CHAOS_OBJECTS` sets how many (12
//! in `make test`; more in `make bench`), `CHAOS_SEED` repeats a run.

use crate::support::control_plane::ControlPlane;
use crate::support::operator::{World, demo_spec};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::time::{Duration, Instant};
use xds_simulator::Endpoint;
use xds_simulator::Fault;

/// A fault queue for one endpoint: a fifth of the calls fail, each in one of `faults`' ways.
fn faulty(rng: &mut StdRng, faults: &[Fault], calls: usize) -> Vec<Fault> {
    (0..calls)
        .map(|_| match rng.random_bool(0.2) {
            true => faults[rng.random_range(0..faults.len())].clone(),
            false => Fault::Latency(Duration::ZERO),
        })
        .collect()
}

#[tokio::test]
async fn after_kills_restarts_and_faults_every_object_has_exactly_one_host() {
    let n: usize = std::env::var("CHAOS_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("chaos: CHAOS_SEED={seed} CHAOS_OBJECTS={n}");
    let mut rng = StdRng::seed_from_u64(seed);

    let plane = ControlPlane::start();
    crate::support::apply_crd(&plane);
    let mut world = World::start_on(&plane, "chaos", |_| {}).await;
    {
        let mut state = world.sim.state();
        state.timing.token_lifetime = Duration::from_secs(3);
    }
    let sent = [
        Fault::ServerError,
        Fault::NonJson,
        Fault::Latency(Duration::from_millis(2500)),
    ];
    let committed = [Fault::DropAfterCommit, Fault::ServerErrorAfterCommit];
    let create_faults: Vec<Fault> = sent.iter().chain(committed.iter()).cloned().collect();
    world.sim.inject(
        Endpoint::CreateRent,
        faulty(&mut rng, &create_faults, 4 * n),
    );
    for endpoint in [
        Endpoint::MyPage,
        Endpoint::One,
        Endpoint::GetToken,
        Endpoint::Delete,
    ] {
        world.sim.inject(endpoint, faulty(&mut rng, &sent, 40 * n));
    }
    world.sim.set_create_waits(3);

    for i in 0..n {
        world.create(&format!("rh-{i:02}"), demo_spec()).await;
    }
    // The storms: kills at random moments, one API server restart, one etcd pause, 6005s.
    let started = Instant::now();
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        world.kill_controller().await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
        match round {
            1 => {
                plane.restart("kube-apiserver");
                println!("chaos: kube-apiserver restarted");
            }
            2 => {
                plane.signal("etcd", libc::SIGSTOP);
                world.start_controller();
                tokio::time::sleep(Duration::from_secs(3)).await;
                plane.signal("etcd", libc::SIGCONT);
                println!("chaos: etcd paused 3 s");
                continue;
            }
            3 => world.sim.set_create_waits(2),
            _ => {}
        }
        world.start_controller();
    }
    println!("chaos: storms over after {:?}", started.elapsed());

    // Every object comes through with one host of its own, and runs.
    let names: Vec<String> = (0..n).map(|i| format!("rh-{i:02}")).collect();
    let owners = world.one_host_each(&names, Duration::from_secs(120)).await;
    for name in &names {
        world.wait_condition(name, "Ready", "True", "Running").await;
    }
    let hosts = world.sim.host_ids();
    let unclaimed: Vec<&String> = hosts.iter().filter(|h| !owners.contains_key(*h)).collect();
    println!(
        "chaos: {n} objects, {} createRent calls, {} hosts, {} unclaimed, ready after {:?}",
        world.sim.calls(Endpoint::CreateRent),
        hosts.len(),
        unclaimed.len(),
        started.elapsed()
    );
    assert!(
        unclaimed.is_empty(),
        "hosts billed with no object: {unclaimed:?}"
    );
    assert_eq!(hosts.len(), n);

    // Deleting everything releases everything.
    for i in 0..n {
        world
            .api()
            .delete(&format!("rh-{i:02}"), &Default::default())
            .await
            .unwrap();
    }
    for i in 0..n {
        world
            .wait_gone(&format!("rh-{i:02}"), Duration::from_secs(120))
            .await;
    }
    assert!(
        world.sim.host_ids().is_empty(),
        "no host left: {:?}",
        world.sim.host_ids()
    );
    world.kill_controller().await;
    plane.stop();
}
