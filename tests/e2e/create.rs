//! createRent end to end: the controller against the real API server and the simulator
//! over HTTP. Each test owns a namespace, a simulator and a controller.

use crate::support::operator::{World, condition, demo_spec, host_id, is};
use std::time::Duration;
use xds_simulator::Endpoint;
use xds_simulator::Fault;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn happy_path_rents_exactly_one_host_and_reports_it() {
    let world = World::start("happy", |_| {}).await;
    world.create("render-01", demo_spec()).await;
    let obj = world
        .wait_condition("render-01", "Rented", "True", "Rented")
        .await;
    let id = host_id(&obj).unwrap();
    assert_eq!(world.sim.host_ids(), vec![id.clone()]);
    let obj = world
        .wait_condition("render-01", "Ready", "True", "Running")
        .await;
    let status = obj.status.unwrap();
    assert_eq!(status.create_attempts, Some(1));
    assert!(status.create_pending.is_none());
    let host = status.host.unwrap();
    assert_eq!(host.status.as_deref(), Some("Running"));
    assert_eq!(
        (host.cpu, host.memory_gb, host.disk_gb),
        (Some(8), Some(32), Some(128))
    );
    assert!(
        obj.metadata
            .finalizers
            .unwrap()
            .contains(&"xuandashi.dev/release-host".to_string())
    );
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
    assert_eq!(world.sim.calls(Endpoint::GetToken), 1);
    assert!(
        world.sim.calls(Endpoint::One) <= 1,
        "one/{id} only for a host newer than the listing"
    );
    world.wait_events("render-01", "Created", 1).await;
    // Idle: no more provider traffic than the poll, and no status churn.
    let rv = world.get("render-01").await.metadata.resource_version;
    let pages = world.sim.calls(Endpoint::MyPage);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        world.get("render-01").await.metadata.resource_version,
        rv,
        "an idle object was written"
    );
    assert!(
        world.sim.calls(Endpoint::MyPage) - pages <= 3,
        "idle polling at a 2 s interval"
    );
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
    // The connection Secret was written once, by its create: the watch's report of that
    // write did not make the controller write it again.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(world.client.clone(), &world.ns);
    let secret = secrets.get("render-01-connection").await.unwrap();
    let writes: Vec<_> = secret
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            (
                f.manager.unwrap_or_default(),
                f.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        writes,
        [("rentedhost-operator".to_string(), "Update".to_string())]
    );
}

#[tokio::test]
async fn creation_waiting_is_retried_until_created() {
    let world = World::start("wait6005", |_| {}).await;
    world.sim.set_create_waits(3);
    world.create("rh", demo_spec()).await;
    let e = world.failed("rh", "Ready", "ProviderCreating").await;
    assert_eq!(e.code, Some(6005));
    assert_eq!(e.provider_message.as_deref(), Some("创建等待"));
    assert!(e.trace_id.is_some_and(|t| t.starts_with("sim-")));
    let obj = world.rented_after("rh", 4).await;
    assert_eq!(obj.status.as_ref().unwrap().create_attempts, Some(4));
    // The host id lands first (the protocol's guarded write), the rest of the status with
    // the next write: a success replaces the last error.
    world
        .wait_for("rh", LIMIT, "without the last error", |o| {
            o.status.as_ref().is_some_and(|s| s.last_error.is_none())
        })
        .await;
}

#[tokio::test]
async fn insufficient_resources_back_off_then_rent_when_capacity_appears() {
    let world = World::start("cap6002", |_| {}).await;
    world.sim.set_capacity("teTapaSUFq", 0);
    world.create("rh", demo_spec()).await;
    let e = world.failed("rh", "Ready", "InsufficientResources").await;
    assert_eq!(e.code, Some(6002));
    world.wait_calls(Endpoint::CreateRent, 4).await;
    let times = world.sim.call_times(Endpoint::CreateRent);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // 30 s, 60 s, 120 s at 1/50: 0.6 s, 1.2 s, 2.4 s (±10 %). Each gap also holds the
    // reconcile's own time, the same for each: 1.3 x leaves it 0.7 s on a busy machine.
    assert!(gaps[0] >= Duration::from_millis(500), "{gaps:?}");
    assert!(
        gaps[1] > gaps[0].mul_f64(1.3) && gaps[2] > gaps[1].mul_f64(1.3),
        "delays grow: {gaps:?}"
    );
    assert!(world.sim.host_ids().is_empty());
    world.sim.set_capacity("teTapaSUFq", 1);
    let obj = world.wait_rented("rh", LIMIT).await;
    assert_eq!(world.sim.host_ids(), vec![host_id(&obj).unwrap()]);
    let reasons = world.wait_events("rh", "Created", 1).await;
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "InsufficientResources")
            .count(),
        1,
        "one event per transition: {reasons:?}"
    );
}

#[tokio::test]
async fn type_mismatch_waits_for_a_spec_change_then_rents() {
    let world = World::start("t7005", |_| {}).await;
    let mut spec = demo_spec();
    spec["imageId"] = "4005".into();
    world.create("rh", spec).await;
    let obj = world
        .wait_condition("rh", "Ready", "False", "TypeMismatch")
        .await;
    let status = obj.status.unwrap();
    let e = status.last_error.unwrap();
    assert_eq!(e.code, Some(7005));
    assert_eq!(
        e.provider_message.as_deref(),
        Some("主机配置类型与镜像类型不一致")
    );
    assert!(e.trace_id.is_some());
    assert!(
        e.message.contains("change spec.packageId or spec.imageId"),
        "{}",
        e.message
    );
    assert_eq!(format!("{:?}", status.phase), "Some(Failed)");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        1,
        "7005 is not retried until the spec changes"
    );
    // Correcting the image before anything was rented is accepted, and leads to a host.
    world
        .patch_spec("rh", serde_json::json!({"imageId": "507"}))
        .await;
    world.rented_after("rh", 2).await;
}

async fn refused_with(world: &World, reason: &str, code: i64) {
    world.create("rh", demo_spec()).await;
    let obj = world
        .wait_for("rh", LIMIT, reason, |o| is(o, "Ready", "False", reason))
        .await;
    let e = obj.status.as_ref().unwrap().last_error.clone().unwrap();
    assert_eq!(e.code, Some(code), "{e:?}");
    assert!(e.provider_message.is_some_and(|m| !m.is_empty()));
    assert!(e.trace_id.is_some());
    assert!(world.sim.host_ids().is_empty());
    world.wait_events("rh", reason, 1).await;
}

#[tokio::test]
async fn real_name_verification_is_explained() {
    let world = World::start("r1037", |_| {}).await;
    world
        .sim
        .update_account("demo-account", |a| a.real_name_verified = false);
    refused_with(&world, "RealNameVerificationRequired", 1037).await;
}

#[tokio::test]
async fn insufficient_balance_is_explained() {
    let world = World::start("r9001", |_| {}).await;
    world
        .sim
        .update_account("demo-account", |a| a.balance = 0.0);
    refused_with(&world, "InsufficientBalance", 9001).await;
}

#[tokio::test]
async fn wrong_credentials_are_explained_after_one_refresh() {
    let world = World::start("r401", |_| {}).await;
    world
        .put_secret("xds-credentials", "demo-account", "not-the-secret")
        .await;
    world.create("rh", demo_spec()).await;
    let e = world.failed("rh", "Ready", "CredentialsInvalid").await;
    assert_eq!(e.code, Some(401));
    assert_eq!(e.provider_message.as_deref(), Some("认证失败"));
    assert!(e.trace_id.is_some());
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 0);
    // Fixing the Secret brings the object back at once (not after the 10-minute retry).
    world
        .put_secret("xds-credentials", "demo-account", "demo-secret")
        .await;
    world.wait_rented("rh", Duration::from_secs(10)).await;
    assert_eq!(world.sim.host_ids().len(), 1);
}

#[tokio::test]
async fn a_missing_secret_is_reported_and_its_arrival_reconciles_at_once() {
    let world = World::start("nosecret", |c| {
        c.home.credentials_secret = None;
    })
    .await;
    let mut spec = demo_spec();
    spec["credentialsSecretRef"] =
        serde_json::json!({"name": "team-a", "uuidKey": "uuid", "secretKey": "secret"});
    world.create("rh", spec).await;
    let obj = world
        .wait_condition("rh", "Ready", "False", "CredentialsMissing")
        .await;
    assert!(
        obj.status
            .unwrap()
            .last_error
            .unwrap()
            .message
            .contains("team-a")
    );
    world
        .put_secret("team-a", "demo-account", "demo-secret")
        .await;
    world.wait_rented("rh", Duration::from_secs(10)).await;
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
}

/// A createRent that commits but whose answer never arrives intact is adopted, not repeated.
async fn committed_without_answer_is_adopted(prefix: &str, fault: Fault) {
    let world = World::start(prefix, |_| {}).await;
    world.sim.inject(Endpoint::CreateRent, [fault]);
    world.create("rh", demo_spec()).await;
    world.rented_after("rh", 1).await;
    world.wait_events("rh", "AdoptedHost", 1).await;
}

#[tokio::test]
async fn a_lost_answer_is_adopted_not_rented_again() {
    committed_without_answer_is_adopted("lost", Fault::DropAfterCommit).await;
}

#[tokio::test]
async fn a_gateway_error_after_commit_is_adopted() {
    committed_without_answer_is_adopted("gw", Fault::ServerErrorAfterCommit).await;
}

#[tokio::test]
async fn an_uncommitted_unknown_outcome_creates_again_after_the_grace_period() {
    let world = World::awaiting_create_outcome("nocommit").await;
    world.rented_after("rh", 2).await;
    let times = world.sim.call_times(Endpoint::CreateRent);
    assert!(
        times[1] - times[0] >= Duration::from_secs(3),
        "no second create within the grace period"
    );
    world.wait_events("rh", "CreateNotCommitted", 1).await;
}

/// Creates `name` with createRent answering after 1.5 s, and kills the controller once the
/// provider has the call (createPending recorded, the answer not yet back).
pub(crate) async fn kill_during_create(world: &mut World, name: &str) {
    world.sim.inject(
        Endpoint::CreateRent,
        [Fault::Latency(Duration::from_millis(1500))],
    );
    world.create(name, demo_spec()).await;
    let pending = |o: &rentedhost_operator::api::RentedHost| {
        o.status
            .as_ref()
            .is_some_and(|s| s.create_pending.is_some())
    };
    world.wait_for(name, LIMIT, "createPending", pending).await;
    while world.sim.calls(Endpoint::CreateRent) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    world.kill_controller().await;
}

#[tokio::test]
async fn a_controller_killed_during_create_adopts_on_restart() {
    let mut world = World::start("killed", |_| {}).await;
    kill_during_create(&mut world, "rh").await;
    // The provider commits the host; its answer has nobody to go to.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(world.sim.host_ids().len(), 1);
    assert!(host_id(&world.get("rh").await).is_none());
    world.start_controller();
    world.rented_after("rh", 1).await;
}

#[tokio::test]
async fn two_matching_unclaimed_hosts_stop_with_an_explanation() {
    let mut world = World::start("ambiguous", |_| {}).await;
    kill_during_create(&mut world, "rh").await;
    // Someone rents the same package by hand meanwhile.
    let body = serde_json::json!({"packageId": "teTapaSUFq", "imageId": "507", "periodNumber": 5, "periodType": 3});
    assert_eq!(world.sim.state().create_rent("demo-account", &body).code, 0);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(world.sim.host_ids().len(), 2);
    world.start_controller();
    let obj = world
        .wait_condition("rh", "Ready", "False", "CreateOutcomeUnknown")
        .await;
    let message = condition(&obj, "Ready")
        .map(|_| {
            obj.status
                .as_ref()
                .unwrap()
                .last_error
                .clone()
                .unwrap()
                .message
        })
        .unwrap();
    assert!(
        message.contains("spec.hostId") && message.contains("xuandashi.dev/create-not-rented"),
        "{message}"
    );
    for id in world.sim.host_ids() {
        assert!(message.contains(&id), "{message} names {id}");
    }
    // The user points the object at one of them.
    let chosen = world.sim.host_ids()[0].clone();
    world
        .patch_spec("rh", serde_json::json!({"hostId": chosen}))
        .await;
    let obj = world
        .wait_for("rh", LIMIT, "adopted", |o| host_id(o).is_some())
        .await;
    assert_eq!(host_id(&obj), Some(chosen));
    assert!(obj.status.unwrap().create_pending.is_none());
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        1,
        "the controller rented once"
    );
    assert_eq!(
        world.sim.host_ids().len(),
        2,
        "and kept its hands off the other host"
    );
}

#[tokio::test]
async fn delete_releases_the_host_and_orphan_keeps_it() {
    let world = World::start("delete", |_| {}).await;
    world.create("released", demo_spec()).await;
    let mut orphan = demo_spec();
    orphan["deletionPolicy"] = "Orphan".into();
    world.create("kept", orphan).await;
    let released = host_id(
        &world
            .wait_for("released", LIMIT, "rented", |o| host_id(o).is_some())
            .await,
    )
    .unwrap();
    let kept = host_id(
        &world
            .wait_for("kept", LIMIT, "rented", |o| host_id(o).is_some())
            .await,
    )
    .unwrap();
    world
        .api()
        .delete("released", &Default::default())
        .await
        .unwrap();
    world
        .api()
        .delete("kept", &Default::default())
        .await
        .unwrap();
    world.wait_gone("released", LIMIT).await;
    world.wait_gone("kept", LIMIT).await;
    assert_eq!(world.sim.host_ids(), vec![kept]);
    assert!(!world.sim.host_ids().contains(&released));
    assert_eq!(world.sim.calls(Endpoint::Delete), 1);
}

#[tokio::test]
async fn a_failing_release_keeps_the_object_until_the_host_is_gone() {
    let world = World::start("delfail", |_| {}).await;
    world.create("rh", demo_spec()).await;
    world.wait_rented("rh", LIMIT).await;
    world
        .sim
        .inject(Endpoint::Delete, [Fault::ServerError, Fault::ServerError]);
    world.api().delete("rh", &Default::default()).await.unwrap();
    world
        .wait_condition("rh", "Synced", "False", "ReleaseFailed")
        .await;
    world.wait_gone("rh", LIMIT).await;
    assert!(world.sim.host_ids().is_empty());
    assert_eq!(world.sim.calls(Endpoint::Delete), 3);
}

#[tokio::test]
async fn token_expiry_under_load_costs_one_get_token() {
    let world = World::start("tokens", |_| {}).await;
    for i in 0..12 {
        world.create(&format!("rh-{i}"), demo_spec()).await;
    }
    for i in 0..12 {
        world
            .wait_for(&format!("rh-{i}"), LIMIT, "ready", |o| {
                is(o, "Ready", "True", "Running")
            })
            .await;
    }
    assert_eq!(world.sim.calls(Endpoint::GetToken), 1);
    assert_eq!(world.sim.host_ids().len(), 12);
    world.sim.expire_tokens();
    // Every object's next poll meets the 401; they share one renewal.
    let pages = world.sim.calls(Endpoint::MyPage);
    let start = std::time::Instant::now();
    while world.sim.calls(Endpoint::MyPage) < pages + 4 {
        assert!(start.elapsed() < LIMIT);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(world.sim.calls(Endpoint::GetToken), 2);
    // And the new token serves all of them.
    for i in 0..12 {
        let obj = world.get(&format!("rh-{i}")).await;
        assert!(is(&obj, "Synced", "True", "Observed"), "{:?}", obj.status);
    }
}
