//! Credentials and Secrets: an account change, a failed token, the default Secret in the
//! operator's namespace, the connection Secret, and a Secret that cannot be read.

use crate::support::operator::{World, demo_spec, host_id, is};
use std::time::Duration;
use xds_simulator::Endpoint;
use xds_simulator::Fault;

const LIMIT: Duration = Duration::from_secs(30);

/// Credentials changed to another account: nothing is created, released or looked up there.
#[tokio::test]
async fn credentials_of_another_account_never_release_or_rent_there() {
    let world = World::start("acct", |_| {}).await;
    world.add_other_account();
    world.create("rh", demo_spec()).await;
    let obj = world.wait_rented("rh", LIMIT).await;
    let id = host_id(&obj).unwrap();
    assert_eq!(
        obj.status.unwrap().account.as_deref(),
        Some("demo-account"),
        "the account is recorded with the host"
    );
    world
        .put_secret("xds-credentials", "other-account", "other-secret")
        .await;
    world
        .wait_condition("rh", "Synced", "False", "CredentialsAccountChanged")
        .await;
    world.api().delete("rh", &Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        world.api().get_opt("rh").await.unwrap().is_some(),
        "finalizer kept"
    );
    assert_eq!(
        world.sim.calls(Endpoint::Delete),
        0,
        "no release on the other account"
    );
    assert_eq!(world.sim.host_ids(), vec![id.clone()]);
    // The right credentials again: the host is released, and the object goes.
    world
        .put_secret("xds-credentials", "demo-account", "demo-secret")
        .await;
    world.wait_gone("rh", LIMIT).await;
    assert!(world.sim.host_ids().is_empty());
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
}

/// A getToken that fails before createRent proves nothing was sent: no unknown outcome.
#[tokio::test]
async fn a_failed_get_token_is_a_proven_non_create() {
    let world = World::start("notoken", |_| {}).await;
    world
        .sim
        .inject(Endpoint::GetToken, [Fault::ServerError, Fault::NonJson]);
    world.create("rh", demo_spec()).await;
    let obj = world.wait_rented("rh", LIMIT).await;
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
    let reasons = world.event_reasons("rh").await;
    assert!(
        !reasons.iter().any(|r| r == "AwaitingCreateOutcome"),
        "{reasons:?}"
    );
    assert_eq!(world.sim.host_ids(), vec![host_id(&obj).unwrap()]);
}

/// The default credentials Secret lives in the operator's namespace, not the watched one:
/// its arrival is seen at once.
#[tokio::test]
async fn the_default_secret_in_the_operator_namespace_is_watched() {
    let operator_ns = {
        let client = crate::support::shared().client().await;
        crate::support::test_namespace(&client, "operator").await
    };
    let home = operator_ns.clone();
    let world = World::start("elsewhere", move |c| {
        c.home.namespace = home;
        c.home.credentials_secret = Some("xds-default".into());
    })
    .await;
    world.create("rh", demo_spec()).await;
    world
        .wait_condition("rh", "Ready", "False", "CredentialsMissing")
        .await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(world.client.clone(), &operator_ns);
    let mut s = k8s_openapi::api::core::v1::Secret::default();
    s.metadata.name = Some("xds-default".into());
    s.string_data = Some(
        [
            ("uuid".to_string(), "demo-account".to_string()),
            ("secret".to_string(), "demo-secret".to_string()),
        ]
        .into(),
    );
    secrets.create(&Default::default(), &s).await.unwrap();
    // The retry table alone would wait 12 s (10 min at 1/50).
    world.wait_rented("rh", Duration::from_secs(6)).await;
}

/// The connection Secret is written again when deleted or edited, and a Secret the
/// operator did not create is never taken over.
#[tokio::test]
async fn the_connection_secret_is_repaired_and_a_foreign_one_refused() {
    use k8s_openapi::api::core::v1::Secret;
    let world = World::start("connfix", |_| {}).await;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(world.client.clone(), &world.ns);
    world.create("rh", demo_spec()).await;
    world.wait_condition("rh", "Ready", "True", "Running").await;
    let password = |s: &Secret| s.data.as_ref().and_then(|d| d.get("hostPw")).cloned();
    let written = world.wait_secret("rh-connection").await;
    secrets
        .delete("rh-connection", &Default::default())
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let again = loop {
        if let Some(s) = secrets.get_opt("rh-connection").await.unwrap()
            && s.metadata.deletion_timestamp.is_none()
        {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "not rewritten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(password(&again), password(&written));
    let edit = serde_json::json!({"data": {"hostPw": "ZWRpdGVk"}});
    secrets
        .patch(
            "rh-connection",
            &Default::default(),
            &kube::api::Patch::Merge(&edit),
        )
        .await
        .unwrap();
    let start = std::time::Instant::now();
    while password(&secrets.get("rh-connection").await.unwrap()) != password(&written) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "edit not repaired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Someone else's Secret of the requested name stays theirs.
    let mut foreign = Secret::default();
    foreign.metadata.name = Some("team-login".into());
    foreign.string_data = Some([("note".to_string(), "keep me".to_string())].into());
    secrets.create(&Default::default(), &foreign).await.unwrap();
    let mut spec = demo_spec();
    spec["connectionSecretName"] = "team-login".into();
    world.create("other", spec).await;
    let obj = world
        .wait_condition("other", "Synced", "False", "ConnectionSecretConflict")
        .await;
    assert!(host_id(&obj).is_some(), "the host is rented all the same");
    let kept = secrets.get("team-login").await.unwrap();
    assert!(kept.metadata.owner_references.is_none());
    assert!(kept.data.unwrap().keys().eq(["note"].iter()));
}

/// A credentials Secret the API server will not hand over (here: RBAC) is a transient
/// Kubernetes error, retried, never `CredentialsMissing`; nothing is created meanwhile.
#[tokio::test]
async fn a_secret_that_cannot_be_read_is_retried_not_reported_missing() {
    let mut world = World::start("secret-rbac", |_| {}).await;
    world.kill_controller().await;
    let plane = crate::support::shared();
    let role = |secret_verbs: &str| {
        let rules = format!(
            r#"  - apiGroups: ["xuandashi.dev"]
    resources: ["rentedhosts", "rentedhosts/status"]
    verbs: ["get", "list", "watch", "patch", "update"]
  - apiGroups: ["xuandashi.dev"]
    resources: ["rentedhostbudgets"]
    verbs: ["get", "list", "watch"]
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: [{secret_verbs}]
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]"#
        );
        crate::support::role_for_user("rho-limited", &rules)
    };
    let applied = crate::support::kubectl_apply(
        plane,
        &world.ns,
        &role(r#""list", "watch", "create", "patch""#),
    );
    assert!(applied.status.success(), "{applied:?}");
    world.start_controller_as(plane.client_as("rho-limited").await);
    world.create("rh", demo_spec()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let obj = world.get("rh").await;
    assert!(
        !is(&obj, "Ready", "False", "CredentialsMissing"),
        "{:?}",
        obj.status
    );
    let reasons = world.event_reasons("rh").await;
    assert!(
        !reasons.iter().any(|r| r == "CredentialsMissing"),
        "{reasons:?}"
    );
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 0);
    let applied = crate::support::kubectl_apply(
        plane,
        &world.ns,
        &role(r#""get", "list", "watch", "create", "patch""#),
    );
    assert!(applied.status.success(), "{applied:?}");
    world.wait_rented("rh", LIMIT).await;
    assert_eq!(world.sim.calls(Endpoint::CreateRent), 1);
}
