//! The leak scan: after a run that rents, loses an answer, renews tokens, reboots, powers off
//! and releases, the account secret, every token the provider issued and every host
//! password it handed out appear nowhere: not in the controller's logs (text and JSON), not
//! in Events, object statuses or `/metrics`, not in any object the API server holds but the
//! connection Secrets (whose job it is) and the credentials Secret (where the user put it).

use crate::support::operator::{World, demo_spec, host_id};
use crate::support::{install_crd, logs, run_ok};
use serde_json::Value;
use std::time::Duration;
use xds_simulator::Endpoint;
use xds_simulator::Fault;

/// Every object of namespace `ns` the API server lists, as JSON, but the Secrets whose job is
/// to hold a secret.
fn api_server_view(ns: &str) -> Vec<Value> {
    let plane = install_crd();
    let types = run_ok(plane.kubectl().args([
        "api-resources",
        "--verbs=list",
        "--namespaced",
        "-o",
        "name",
    ]));
    let types: Vec<&str> = types.lines().collect();
    let listed = run_ok(plane.kubectl().args([
        "get",
        &types.join(","),
        "-n",
        ns,
        "--ignore-not-found",
        "-o",
        "json",
    ]));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let holds_a_secret = |o: &&Value| {
        o["kind"] == "Secret"
            && (o["metadata"]["name"] == "xds-credentials"
                || o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-connection")))
    };
    let items = listed["items"].as_array().unwrap();
    items
        .iter()
        .filter(|o| !holds_a_secret(o))
        .cloned()
        .collect()
}

/// `secret` as a Secret's `data` holds it (base64).
fn base64(secret: &str) -> String {
    let encoded = k8s_openapi::ByteString(secret.as_bytes().to_vec());
    serde_json::to_string(&encoded)
        .unwrap()
        .trim_matches('"')
        .to_string()
}

/// Where each secret shows up among `places` (a name and its text each), as it is or in
/// base64.
fn leaks(secrets: &[String], places: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (place, text) in places {
        for secret in secrets {
            if text.contains(secret.as_str()) || text.contains(&base64(secret)) {
                found.push(format!("{place}: {}…", &secret[..4.min(secret.len())]));
            }
        }
    }
    found
}

#[tokio::test]
async fn no_secret_reaches_logs_events_status_metrics_or_other_objects() {
    let world = World::start("leaks", |_| {}).await;
    world.create("plain", demo_spec()).await;
    world
        .sim
        .inject(Endpoint::CreateRent, [Fault::DropAfterCommit]);
    world.create("lost", demo_spec()).await;
    for name in ["plain", "lost"] {
        world.wait_condition(name, "Ready", "True", "Running").await;
    }
    // Tokens expire twice; each renewal issues a new one.
    for _ in 0..2 {
        world.expire_tokens_until_renewed().await;
    }
    world
        .annotate(
            "plain",
            "xuandashi.dev/reboot-requested-at",
            "2026-11-26T09:00:00Z",
        )
        .await;
    world
        .patch_spec("lost", serde_json::json!({"powerState": "Stopped"}))
        .await;
    world
        .wait_condition("lost", "Ready", "True", "Stopped")
        .await;
    world
        .sim
        .update_account("demo-account", |a| a.balance = 0.0);
    world.create("broke", demo_spec()).await;
    world.failed("broke", "Ready", "InsufficientBalance").await;

    // While everything exists: statuses, events, the API server's view, metrics.
    let mut places: Vec<(String, String)> = Vec::new();
    for name in ["plain", "lost", "broke"] {
        let obj = world.get(name).await;
        assert!(name == "broke" || host_id(&obj).is_some());
        places.push((
            format!("{name} status"),
            serde_json::to_string(&obj.status).unwrap(),
        ));
        for event in world.events(name).await {
            places.push((
                format!("{name} event"),
                serde_json::to_string(&event).unwrap(),
            ));
        }
    }
    for object in api_server_view(&world.ns) {
        let what = format!("{} {}", object["kind"], object["metadata"]["name"]);
        places.push((what, object.to_string()));
    }
    places.push(("/metrics".into(), world.metrics.render()));
    // What the scan left out does hold the secrets: it would have seen them.
    let connection = run_ok(install_crd().kubectl().args([
        "get",
        "secret",
        "plain-connection",
        "-n",
        &world.ns,
        "-o",
        "json",
    ]));

    // Then everything goes, and the logs of the whole run are read.
    for name in ["plain", "lost", "broke"] {
        world.api().delete(name, &Default::default()).await.unwrap();
    }
    for name in ["plain", "lost", "broke"] {
        world.wait_gone(name, Duration::from_secs(30)).await;
    }
    assert!(world.sim.host_ids().is_empty(), "every host released");
    places.push(("text log".into(), logs::text()));
    places.push(("JSON log".into(), logs::json_lines().join("\n")));

    let (tokens, passwords) = {
        let state = world.sim.state();
        (state.issued_tokens.clone(), state.issued_passwords.clone())
    };
    assert!(tokens.len() >= 3, "tokens were renewed: {}", tokens.len());
    assert_eq!(passwords.len(), 2, "two hosts were rented");
    let secrets: Vec<String> = tokens
        .into_iter()
        .chain(passwords)
        .chain(["demo-secret".to_string()])
        .collect();
    let found = leaks(&secrets, &places);
    println!(
        "leak scan: {} secrets over {} places ({} bytes): {} found",
        secrets.len(),
        places.len(),
        places.iter().map(|(_, t)| t.len()).sum::<usize>(),
        found.len()
    );
    assert!(found.is_empty(), "secrets leaked: {found:#?}");
    let held = leaks(&secrets, &[("plain-connection".into(), connection)]);
    assert_eq!(
        held.len(),
        1,
        "the connection Secret holds its password: {held:?}"
    );
}
