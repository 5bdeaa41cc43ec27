//! Money safety through what a cluster lives through (issue 22): observe-only objects next
//! to lost creates, installs that share an account, answers of any size, objects an older
//! operator left, and two objects naming one host.

use crate::create::kill_during_create;
use crate::support::operator::{CREDENTIALS, World, demo_spec, host_id, is};
use kube::api::{Patch, PatchParams};
use rentedhost_operator::api::FINALIZER;
use std::time::Duration;
use xds_simulator::Endpoint;
use xds_simulator::{Fault, catalogue::DEMO_ACCOUNT};

const LIMIT: Duration = Duration::from_secs(30);
const MIB: usize = 1024 * 1024;

/// A host rented on the demo account now, by someone other than the operator.
fn rented_by_hand(world: &World) -> String {
    let body = serde_json::json!({"packageId": "teTapaSUFq", "imageId": "507", "periodNumber": 5, "periodType": 3});
    let answer = world.sim.state().create_rent(DEMO_ACCOUNT.0, &body);
    assert_eq!(answer.code, 0);
    answer.data.as_str().unwrap().to_string()
}

fn with(spec: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = spec;
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

fn message(obj: &rentedhost_operator::api::RentedHost, condition: &str) -> String {
    let status = obj.status.as_ref().unwrap();
    let c = status.conditions.iter().find(|c| c.type_ == condition);
    c.unwrap().message.clone()
}

/// Finding 3: an observe-only object naming the host a lost create made used to hide it
/// (claimed), so its creator rented again after the grace period and the first host
/// belonged to an object that never releases it. Now a person decides.
#[tokio::test]
async fn an_observe_only_object_never_hides_the_host_of_a_lost_create() {
    let mut world = World::start("observed-lost", |_| {}).await;
    kill_during_create(&mut world, "rh").await;
    // The provider commits the host; its answer has nobody to go to.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let hosts = world.sim.host_ids();
    assert_eq!(hosts.len(), 1);
    let id = hosts[0].clone();
    let observe = serde_json::json!({"hostId": id, "managementPolicy": "ObserveOnly"});
    world.create("watcher", with(demo_spec(), observe)).await;
    world.start_controller();
    let obj = world
        .wait_condition("rh", "Ready", "False", "CreateOutcomeUnknown")
        .await;
    assert!(message(&obj, "Ready").contains(&id), "names the host");
    // Past the grace period: still one create, one host.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
    assert_eq!(world.sim.host_ids(), vec![id.clone()]);
    assert!(host_id(&world.get("rh").await).is_none());
    world
        .wait_condition("watcher", "Ready", "True", "Running")
        .await;
}

/// Finding 7: an install that cannot see every claim on its account (here: namespaced, the
/// default) paired a lost answer with a host someone else rented in its window. Now only
/// the answer, a listing with no host at all in the window, or a person resolves it.
#[tokio::test]
async fn an_install_sharing_its_account_never_pairs_someone_elses_host() {
    // Namespaced, and nothing said about the account: another install may rent on it.
    let world = World::start("shared-account", |c| c.shared_account = None).await;
    // Our create makes nothing and its answer is garbage; the listings fail for a while,
    // and meanwhile someone else rents the same package on the account.
    world.sim.inject(Endpoint::CreateRent, [Fault::NonJson]);
    world
        .sim
        .inject(Endpoint::MyPage, std::iter::repeat_n(Fault::ServerError, 4));
    world.create("rh", demo_spec()).await;
    world
        .wait_condition("rh", "Ready", "False", "AwaitingCreateOutcome")
        .await;
    let theirs = rented_by_hand(&world);
    let obj = world
        .wait_condition("rh", "Ready", "False", "CreateOutcomeUnknown")
        .await;
    assert!(message(&obj, "Ready").contains(&theirs), "names the host");
    assert!(host_id(&obj).is_none(), "someone else's host is not taken");
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
    // The person says nothing was rented: one new create, a host of our own.
    let since = obj.status.unwrap().create_pending.unwrap().since;
    world
        .annotate("rh", "xuandashi.dev/create-not-rented", &since)
        .await;
    let obj = world.wait_rented("rh", LIMIT).await;
    assert_ne!(host_id(&obj).as_deref(), Some(theirs.as_str()));
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 2);
    assert_eq!(world.sim.host_ids().len(), 2, "theirs is left alone");
    // Once no create of ours can explain it, someone else's host is counted.
    let start = std::time::Instant::now();
    while !world
        .metrics
        .render()
        .contains("rentedhost_foreign_hosts 1")
    {
        assert!(
            start.elapsed() < LIMIT,
            "someone else's host is not counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Finding 8: a createRent answered by a huge body, and listings of 64 MiB: provider
/// garbage (an unknown outcome), read no further, and the host is found without a second
/// create.
#[tokio::test]
async fn a_huge_answer_is_garbage_and_a_create_answered_so_is_resolved_once() {
    let world = World::start("huge-answer", |_| {}).await;
    world
        .sim
        .inject(Endpoint::CreateRent, [Fault::HugeBody(64 * MIB)]);
    world.sim.inject(
        Endpoint::MyPage,
        std::iter::repeat_n(Fault::HugeBody(64 * MIB), 2),
    );
    world.create("rh", demo_spec()).await;
    let obj = world.wait_rented("rh", LIMIT).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
    assert_eq!(world.sim.host_ids(), vec![host_id(&obj).unwrap()]);
    world.wait_events("rh", "AdoptedHost", 1).await;
}

/// Finding 5: an object an older operator left (`status.hostId`, no `status.account`) took
/// the account of whatever credentials it met first; after a switch of credentials, its
/// deletion "proved" the host gone in the wrong account and dropped the finalizer while
/// the host billed on. The account is now recorded only once the host is seen in it.
#[tokio::test]
async fn a_host_an_older_operator_rented_is_never_released_by_its_absence_elsewhere() {
    let mut world = World::start("legacy-account", |_| {}).await;
    world.kill_controller().await;
    let id = rented_by_hand(&world);
    world.add_other_account();
    world
        .put_secret(CREDENTIALS, "other-account", "other-secret")
        .await;
    // The object as an older operator left it.
    world.create("legacy", demo_spec()).await;
    let finalizer = serde_json::json!({"metadata": {"finalizers": [FINALIZER]}});
    world.merge("legacy", finalizer).await.unwrap();
    let status = serde_json::json!({"status": {"hostId": id, "phase": "Running"}});
    world
        .api()
        .patch_status("legacy", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    world.start_controller();
    let obj = world
        .wait_condition("legacy", "Ready", "False", "HostNotFound")
        .await;
    assert_eq!(
        obj.status.unwrap().account,
        None,
        "no account is recorded where the host was never seen"
    );
    world.delete("legacy").await;
    let obj = world
        .wait_condition("legacy", "Synced", "False", "HostNotFound")
        .await;
    assert!(message(&obj, "Synced").contains("other-account"), "{obj:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(world.api().get_opt("legacy").await.unwrap().is_some());
    assert!(world.sim.host_ids().contains(&id), "the host still bills");
    // Back on the account that rented it: released, and then the object goes.
    world
        .put_secret(CREDENTIALS, DEMO_ACCOUNT.0, DEMO_ACCOUNT.1)
        .await;
    world.wait_gone("legacy", LIMIT).await;
    assert!(world.sim.host_ids().is_empty(), "released");
}

/// Finding 9: two objects applied together naming one host nobody held refused each other
/// forever. Exactly one gets it (the one that holds it, else the older, then by name: which
/// one depends on which the operator sees first); the other gets it once the first lets go.
#[tokio::test]
async fn of_two_objects_naming_one_host_one_gets_it_and_the_other_after_it() {
    let world = World::start("one-host-two-names", |_| {}).await;
    let id = rented_by_hand(&world);
    // Orphan both: whichever wins lets the host go for the other.
    let spec = with(
        demo_spec(),
        serde_json::json!({"hostId": id, "deletionPolicy": "Orphan"}),
    );
    tokio::join!(
        world.create("first", spec.clone()),
        world.create("second", spec)
    );
    let deadline = std::time::Instant::now() + LIMIT;
    let (winner, loser) = loop {
        let (a, b) = tokio::join!(world.get("first"), world.get("second"));
        let ready = |o: &rentedhost_operator::api::RentedHost| is(o, "Ready", "True", "Running");
        match (ready(&a), ready(&b)) {
            (true, true) => panic!("both objects hold host {id}: {a:?} {b:?}"),
            (true, false) => break ("first", "second"),
            (false, true) => break ("second", "first"),
            (false, false) if std::time::Instant::now() > deadline => {
                panic!("neither object got host {id}: {a:?} {b:?}")
            }
            (false, false) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let refused = world
        .wait_condition(loser, "Ready", "False", "HostClaimed")
        .await;
    assert!(message(&refused, "Ready").contains(winner));
    assert!(is(&world.get(winner).await, "Ready", "True", "Running"));
    // The winner lets the host go (Orphan): the other is woken and takes it.
    world.delete(winner).await;
    world.wait_gone(winner, LIMIT).await;
    let obj = world
        .wait_for(loser, Duration::from_secs(10), "ready", |o| {
            is(o, "Ready", "True", "Running")
        })
        .await;
    assert_eq!(host_id(&obj), Some(id.clone()));
    assert_eq!(world.sim.host_ids(), vec![id]);
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 0);
}

/// Finding 1: `kubectl delete namespace` with the operator down removed the credentials
/// Secrets while objects still needed them to release their hosts (and to settle a pending
/// create): the namespace stayed Terminating and the hosts billed on. The Secrets now carry
/// `xuandashi.dev/credentials-in-use` until no object needs them.
#[tokio::test]
async fn deleting_a_namespace_releases_every_host_before_its_credentials_go() {
    use k8s_openapi::api::core::v1::Secret;
    let mut world = World::start("ns-delete", |_| {}).await;
    world
        .put_secret("own-creds", DEMO_ACCOUNT.0, DEMO_ACCOUNT.1)
        .await;
    let own = serde_json::json!({"credentialsSecretRef": {"name": "own-creds"}});
    for name in ["a", "b", "c"] {
        world.create(name, with(demo_spec(), own.clone())).await;
    }
    world.create("d", demo_spec()).await;
    for name in ["a", "b", "c", "d"] {
        world.wait_condition(name, "Ready", "True", "Running").await;
    }
    // A create whose host the provider commits while the operator is down.
    world.sim.inject(
        Endpoint::CreateRent,
        [Fault::Latency(Duration::from_millis(1500))],
    );
    world.create("p", with(demo_spec(), own)).await;
    world
        .wait_for("p", LIMIT, "createPending", |o| {
            o.status
                .as_ref()
                .is_some_and(|s| s.create_pending.is_some())
        })
        .await;
    while world.sim.calls(Endpoint::CreateRent) < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    world.kill_controller().await;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(world.client.clone(), &world.ns);
    for name in ["own-creds", CREDENTIALS] {
        let secret = secrets.get(name).await.unwrap();
        let finalizers = secret.metadata.finalizers.unwrap_or_default();
        assert!(
            finalizers
                .iter()
                .any(|f| f == "xuandashi.dev/credentials-in-use"),
            "{name}: {finalizers:?}"
        );
    }
    world.delete_namespace().await;
    // The operator is down for a while (an upgrade, a crash loop) as the namespace goes:
    // until the namespace controller has asked to delete both Secrets (its pace depends on
    // the machine, so this waits for the deletions rather than for a fixed time), then 2 s.
    let asked = tokio::time::Instant::now();
    for name in ["own-creds", CREDENTIALS] {
        loop {
            let secret = secrets.get(name).await.unwrap();
            if secret.metadata.deletion_timestamp.is_some() {
                break;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(90),
                "{name}: the namespace controller never deleted it"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(world.sim.host_ids().len(), 5, "every host still bills");
    for name in ["own-creds", CREDENTIALS] {
        let secret = secrets.get(name).await.unwrap();
        assert!(secret.metadata.deletion_timestamp.is_some(), "{name}");
        assert!(secret.data.is_some(), "{name} keeps its credentials");
    }
    let deleting = world.get("a").await;
    assert!(deleting.metadata.deletion_timestamp.is_some());
    world.start_controller();
    let took = world
        .namespace_gone(Duration::from_secs(120))
        .await
        .unwrap();
    println!("namespace gone {took:?} after the operator came back");
    assert!(
        world.sim.host_ids().is_empty(),
        "nothing left on the account"
    );
    assert_eq!(world.sim.calls(Endpoint::Delete), 5, "every host released");
    assert_eq!(
        world.sim.calls(Endpoint::CreateRent),
        5,
        "nothing rented twice"
    );
}

/// Review of the credentials finalizer: a paused object makes no provider call, but the
/// credentials its release will need are kept all the same (here: a Secret an older
/// operator left without the finalizer, and the namespace deleted while the object is
/// paused).
#[tokio::test]
async fn a_paused_objects_credentials_are_kept_for_its_release() {
    use k8s_openapi::api::core::v1::Secret;
    let mut world = World::start("paused-creds", |_| {}).await;
    world
        .put_secret("own-creds", DEMO_ACCOUNT.0, DEMO_ACCOUNT.1)
        .await;
    let own = serde_json::json!({"credentialsSecretRef": {"name": "own-creds"}});
    world.create("rh", with(demo_spec(), own)).await;
    world.wait_condition("rh", "Ready", "True", "Running").await;
    world
        .annotate("rh", rentedhost_operator::api::PAUSED_ANNOTATION, "true")
        .await;
    world
        .wait_condition("rh", "Synced", "False", "Paused")
        .await;
    world.kill_controller().await;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(world.client.clone(), &world.ns);
    let bare = serde_json::json!({"metadata": {"finalizers": null}});
    secrets
        .patch("own-creds", &PatchParams::default(), &Patch::Merge(&bare))
        .await
        .unwrap();
    world.start_controller();
    let protected = || async {
        let secret = secrets.get("own-creds").await.unwrap();
        let finalizers = secret.metadata.finalizers.unwrap_or_default();
        finalizers
            .iter()
            .any(|f| f == "xuandashi.dev/credentials-in-use")
    };
    let start = std::time::Instant::now();
    while !protected().await {
        assert!(
            start.elapsed() < LIMIT,
            "the paused object's Secret is not protected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    world.delete_namespace().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(world.sim.host_ids().len(), 1, "the pause holds the release");
    assert!(secrets.get("own-creds").await.unwrap().data.is_some());
    let resume = serde_json::json!({"metadata": {"annotations": {rentedhost_operator::api::PAUSED_ANNOTATION: null}}});
    world.merge("rh", resume).await.unwrap();
    world
        .namespace_gone(Duration::from_secs(120))
        .await
        .unwrap();
    assert!(world.sim.host_ids().is_empty(), "released once resumed");
}

/// Review of the reboot record: an older operator's status manager owned
/// `status.lastRebootRequest` alone; the first status write of the new one (here: an
/// error, a listing that fails) must not remove it, or the host is rebooted again.
#[tokio::test]
async fn an_older_operators_reboot_record_survives_the_upgrade() {
    let mut world = World::start("reboot-upgrade", |_| {}).await;
    world.create("rh", demo_spec()).await;
    world.wait_condition("rh", "Ready", "True", "Running").await;
    world.kill_controller().await;
    let value = "2026-11-26T08:00:00Z";
    world
        .annotate("rh", rentedhost_operator::api::REBOOT_ANNOTATION, value)
        .await;
    // What the older operator wrote when it rebooted: its status manager's apply of the
    // observation, the record with it.
    let mut observed = serde_json::to_value(world.get("rh").await.status.unwrap()).unwrap();
    let fields = observed.as_object_mut().unwrap();
    for protocol in [
        "hostId",
        "createPending",
        "createAttempts",
        "account",
        "lastRetryRequest",
    ] {
        fields.remove(protocol);
    }
    fields.insert("lastRebootRequest".into(), value.into());
    let status = serde_json::json!({
        "apiVersion": "xuandashi.dev/v1alpha1",
        "kind": "RentedHost",
        "status": observed,
    });
    world
        .api()
        .patch_status(
            "rh",
            &PatchParams::apply("rentedhost-operator-status").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    world
        .sim
        .inject(Endpoint::MyPage, std::iter::repeat_n(Fault::ServerError, 2));
    world.start_controller();
    world
        .wait_condition("rh", "Synced", "False", "ProviderUnavailable")
        .await;
    world.wait_condition("rh", "Ready", "True", "Running").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(world.sim.calls(Endpoint::Reboot), 0, "not rebooted again");
    let kept = world.get("rh").await.status.unwrap().last_reboot_request;
    assert_eq!(kept.as_deref(), Some(value));
}

/// Review of the credentials finalizer: a Secret deleted while an object only waits to rent
/// (6002) is not held for it (it would be held forever: the object cannot rent with a Secret
/// being deleted); the Secret goes, and once it is created again the object rents once.
#[tokio::test]
async fn a_secret_deleted_while_an_object_waits_to_rent_goes_and_can_come_back() {
    use k8s_openapi::api::core::v1::Secret;
    let world = World::start("rotate-creds", |_| {}).await;
    world.sim.set_capacity("teTapaSUFq", 0);
    world
        .put_secret("own-creds", DEMO_ACCOUNT.0, DEMO_ACCOUNT.1)
        .await;
    let own = serde_json::json!({"credentialsSecretRef": {"name": "own-creds"}});
    world.create("rh", with(demo_spec(), own)).await;
    world
        .wait_condition("rh", "Ready", "False", "InsufficientResources")
        .await;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(world.client.clone(), &world.ns);
    secrets
        .delete("own-creds", &Default::default())
        .await
        .unwrap();
    let start = std::time::Instant::now();
    while secrets.get_opt("own-creds").await.unwrap().is_some() {
        assert!(
            start.elapsed() < LIMIT,
            "the Secret is held for an object with no host"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("Secret gone {:?} after its deletion", start.elapsed());
    let creates = world.sim.calls(Endpoint::CreateRent);
    world.sim.set_capacity("teTapaSUFq", 1);
    world
        .put_secret("own-creds", DEMO_ACCOUNT.0, DEMO_ACCOUNT.1)
        .await;
    let obj = world.wait_rented("rh", LIMIT).await;
    assert_eq!(world.sim.host_ids(), vec![host_id(&obj).unwrap()]);
    assert!(world.sim.calls(Endpoint::CreateRent) > creates);
}

/// Issue 18: `helm uninstall` deletes the operator's RBAC and Deployment before its
/// credentials Secret, so an operator that removed the finalizer only once it saw the
/// Secret being deleted never could: the Secret stayed Terminating for good, and its
/// namespace with it. The finalizer now goes as soon as no object needs the Secret, so
/// once the objects are gone the operator can go first and the Secret after it.
#[tokio::test]
async fn once_no_object_needs_a_secret_it_goes_without_the_operator() {
    use k8s_openapi::api::core::v1::Secret;
    let mut world = World::start("uninstall-creds", |_| {}).await;
    world
        .put_secret("own-creds", DEMO_ACCOUNT.0, DEMO_ACCOUNT.1)
        .await;
    let own = serde_json::json!({"credentialsSecretRef": {"name": "own-creds"}});
    world.create("a", with(demo_spec(), own)).await;
    world.create("b", demo_spec()).await;
    for name in ["a", "b"] {
        world.wait_condition(name, "Ready", "True", "Running").await;
    }
    let secrets: kube::Api<Secret> = kube::Api::namespaced(world.client.clone(), &world.ns);
    let protected = |name: &'static str| {
        let secrets = secrets.clone();
        async move {
            let secret = secrets.get(name).await.unwrap();
            let finalizers = secret.metadata.finalizers.unwrap_or_default();
            finalizers
                .iter()
                .any(|f| f == "xuandashi.dev/credentials-in-use")
        }
    };
    for name in ["own-creds", CREDENTIALS] {
        assert!(protected(name).await, "{name}: a host to release");
    }
    for name in ["a", "b"] {
        world.delete(name).await;
        world.wait_gone(name, LIMIT).await;
    }
    let start = std::time::Instant::now();
    for name in ["own-creds", CREDENTIALS] {
        while protected(name).await {
            // Well before the periodic look (30 s): the objects' going asks for it.
            let limit = Duration::from_secs(10);
            assert!(start.elapsed() < limit, "{name} is still held for nobody");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "both Secrets free {:?} after their last objects went",
        start.elapsed()
    );
    // The operator goes first (helm deletes its Deployment and RBAC first), then the
    // Secrets: nothing holds them.
    world.kill_controller().await;
    for name in ["own-creds", CREDENTIALS] {
        secrets.delete(name, &Default::default()).await.unwrap();
    }
    let start = std::time::Instant::now();
    for name in ["own-creds", CREDENTIALS] {
        while secrets.get_opt(name).await.unwrap().is_some() {
            assert!(start.elapsed() < LIMIT, "{name} stays Terminating");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(world.sim.host_ids().is_empty());
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 2);
}

/// Review of the eager finalizer: an `Orphan` object's host needs no release today, but a
/// person may switch it to `Delete` while the operator is down and delete the namespace
/// before it looks again; the Secret must still be there to release the host.
#[tokio::test]
async fn an_orphaned_hosts_credentials_stay_for_a_switch_to_delete() {
    use k8s_openapi::api::core::v1::Secret;
    let mut world = World::start("orphan-switch", |_| {}).await;
    world
        .put_secret("own-creds", DEMO_ACCOUNT.0, DEMO_ACCOUNT.1)
        .await;
    let own = serde_json::json!({"credentialsSecretRef": {"name": "own-creds"}, "deletionPolicy": "Orphan"});
    world.create("rh", with(demo_spec(), own.clone())).await;
    let mut other = with(demo_spec(), own);
    other["deletionPolicy"] = serde_json::json!("Delete");
    world.create("other", other).await;
    for name in ["rh", "other"] {
        world.wait_condition(name, "Ready", "True", "Running").await;
    }
    // Past the settling time, the other object goes: the Secret is looked at.
    tokio::time::sleep(Duration::from_secs(4)).await;
    world.delete("other").await;
    world.wait_gone("other", LIMIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    world.kill_controller().await;
    world
        .patch_spec("rh", serde_json::json!({"deletionPolicy": "Delete"}))
        .await;
    world.delete_namespace().await;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(world.client.clone(), &world.ns);
    let asked = std::time::Instant::now();
    loop {
        let secret = secrets.get_opt("own-creds").await.unwrap();
        let secret = secret.expect("the Secret went while a host still needs it");
        if secret.metadata.deletion_timestamp.is_some() {
            break;
        }
        assert!(asked.elapsed() < Duration::from_secs(90));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = secrets.get_opt("own-creds").await.unwrap();
    assert!(kept.is_some_and(|s| s.data.is_some()), "kept with its data");
    world.start_controller();
    world
        .namespace_gone(Duration::from_secs(120))
        .await
        .unwrap();
    assert!(world.sim.host_ids().is_empty(), "released under Delete");
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 2);
}

/// Review of the credentials finalizer: an adoption gives the object a host to release, so
/// it too is refused with credentials being deleted (it used to go through unchecked, and
/// the Secret could go before the adopted host was released).
#[tokio::test]
async fn no_host_is_adopted_with_credentials_being_deleted() {
    use k8s_openapi::api::core::v1::Secret;
    let world = World::start("adopt-deleting", |_| {}).await;
    world
        .put_secret("own-creds", DEMO_ACCOUNT.0, DEMO_ACCOUNT.1)
        .await;
    let own = serde_json::json!({"credentialsSecretRef": {"name": "own-creds"}});
    world.create("a", with(demo_spec(), own.clone())).await;
    world.wait_condition("a", "Ready", "True", "Running").await;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(world.client.clone(), &world.ns);
    secrets
        .delete("own-creds", &Default::default())
        .await
        .unwrap();
    let theirs = rented_by_hand(&world);
    let mut adopting = with(demo_spec(), own);
    adopting["hostId"] = serde_json::json!(theirs);
    world.create("b", adopting).await;
    let refused = world
        .wait_condition("b", "Ready", "False", "CredentialsMissing")
        .await;
    assert!(host_id(&refused).is_none(), "not adopted");
    assert!(message(&refused, "Ready").contains("being deleted"));
    assert!(
        secrets.get_opt("own-creds").await.unwrap().is_some(),
        "held for a"
    );
    // a's host is released through the Secret; then the Secret goes.
    world.delete("a").await;
    world.wait_gone("a", LIMIT).await;
    let start = std::time::Instant::now();
    while secrets.get_opt("own-creds").await.unwrap().is_some() {
        assert!(start.elapsed() < LIMIT, "the Secret stays");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        world.sim.host_ids(),
        vec![theirs],
        "only the host never adopted is left"
    );
}
