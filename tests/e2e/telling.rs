//! What the operator tells people: over a happy create, a lost answer, a token expiry, a 9001,
//! a 401 that survives the renewal and a vanished host, the log lines have levels that
//! mean something and the object's fields, the events say what to do, and neither carries
//! Debug output or a secret.

use crate::support::logs;
use crate::support::operator::{World, demo_spec, host_id};
use serde_json::Value;
use std::time::Duration;
use xds_simulator::Endpoint;
use xds_simulator::Fault;

/// The operator's JSON lines about objects of namespace `ns`.
fn lines_of(ns: &str) -> Vec<Value> {
    logs::json_lines()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|l| l["namespace"] == ns)
        .collect()
}

/// The lines of `name` at `level` with `reason`.
fn told<'a>(lines: &'a [Value], name: &str, level: &str, reason: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["name"] == name && l["level"] == level && l["reason"] == reason)
        .collect()
}

fn once<'a>(lines: &'a [Value], name: &str, level: &str, reason: &str) -> &'a Value {
    match told(lines, name, level, reason).as_slice() {
        [line] => line,
        other => panic!("{name}: want one {level} {reason} line, got {other:#?}"),
    }
}

#[tokio::test]
async fn logs_and_events_tell_the_story_with_fields_and_no_debug_output_or_secrets() {
    let world = World::start("telling", |_| {}).await;
    let ns = world.ns.clone();

    // A happy create: a few INFO lines, nothing louder.
    world.create("happy", demo_spec()).await;
    world
        .wait_condition("happy", "Ready", "True", "Running")
        .await;

    // A lost answer: the create committed, its answer never came; the host is paired.
    world
        .sim
        .inject(Endpoint::CreateRent, [Fault::DropAfterCommit]);
    world.create("lost", demo_spec()).await;
    let lost = world
        .wait_condition("lost", "Ready", "True", "Running")
        .await;
    let id = host_id(&lost).unwrap();

    // A token that expired: renewed at the next call, and that is routine.
    world.expire_tokens_until_renewed().await;

    // A 401 that survives the renewal: the Secret is wrong.
    world
        .put_secret("wrong-creds", "demo-account", "not-the-secret")
        .await;
    let mut spec = demo_spec();
    spec["credentialsSecretRef"] = serde_json::json!({"name": "wrong-creds"});
    world.create("badcreds", spec).await;
    world
        .failed("badcreds", "Ready", "CredentialsInvalid")
        .await;

    // 9001: the wallet is empty.
    world
        .sim
        .update_account("demo-account", |a| a.balance = 0.0);
    world.create("broke", demo_spec()).await;
    let broke = world.failed("broke", "Ready", "InsufficientBalance").await;
    assert_eq!(broke.code, Some(9001));

    // The host vanishes from the account.
    let passwords: Vec<String> = world
        .sim
        .state()
        .hosts
        .values()
        .filter_map(|h| h.host.host_pw.clone())
        .collect();
    world.sim.remove_host(&id);
    world.failed("lost", "Ready", "HostNotFound").await;
    // Retries of the same state must not repeat the lines (the poll keeps observing).
    tokio::time::sleep(Duration::from_secs(5)).await;

    let lines = lines_of(&ns);
    // Each field once a line (the host id used to be repeated once recorded).
    let text = logs::text();
    let repeated: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&ns) && l.matches("hostId=").count() > 1)
        .collect();
    assert!(repeated.is_empty(), "{repeated:#?}");
    let loud = |name: &str| {
        lines
            .iter()
            .filter(|l| l["name"] == name && l["level"] != "DEBUG")
            .collect::<Vec<_>>()
    };
    let happy = loud("happy");
    assert!(
        happy.len() <= 3 && happy.iter().all(|l| l["level"] == "INFO"),
        "a happy create is a few INFO lines: {happy:#?}"
    );
    once(&lines, "happy", "INFO", "Created");

    // The money moments are warnings, once each, with the object's fields.
    once(&lines, "lost", "WARN", "AwaitingCreateOutcome");
    let adopted = once(&lines, "lost", "WARN", "AdoptedHost");
    assert_eq!(adopted["hostId"], id.as_str());
    let gone = once(&lines, "lost", "WARN", "HostNotFound");
    assert_eq!(gone["hostId"], id.as_str());
    let wallet = once(&lines, "broke", "WARN", "InsufficientBalance");
    assert_eq!(wallet["code"], 9001);
    assert!(
        wallet["traceId"]
            .as_str()
            .is_some_and(|t| t.starts_with("sim-")),
        "{wallet}"
    );
    assert!(wallet["message"].as_str().unwrap().contains("top up"));
    // A 401 after the renewal is the operator unable to work: ERROR, naming the Secret.
    let creds = once(&lines, "badcreds", "ERROR", "CredentialsInvalid");
    assert_eq!(creds["secret"], format!("{ns}/wrong-creds"));

    // The renewal itself is DEBUG, and no louder line speaks of tokens.
    let all: Vec<Value> = logs::json_lines()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        all.iter().any(|l| l["level"] == "DEBUG"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("renewing it (routine)"))),
        "the routine renewal is logged at DEBUG"
    );
    for line in lines.iter().filter(|l| l["level"] != "DEBUG") {
        let message = line["message"].as_str().unwrap_or_default();
        assert!(
            !message.contains("token") || line["reason"] == "CredentialsInvalid",
            "{line}"
        );
    }

    // No Debug output and no field twice in this test's lines; no secret in any line.
    let json = logs::json_lines();
    let text = logs::text();
    let in_ns = format!("namespace={ns} ");
    let ours = json
        .iter()
        .map(String::as_str)
        .filter(|l| l.contains(&format!("\"namespace\":\"{ns}\"")));
    for line in ours.chain(text.lines().filter(|l| l.contains(&in_ns))) {
        for debug in ["Some(", "None", " { "] {
            assert!(!line.contains(debug), "{debug:?} in {line}");
        }
        for key in ["namespace", "name", "hostId", "traceId", "reason"] {
            assert!(
                line.matches(&format!("\"{key}\":")).count() <= 1,
                "{key} twice in {line}"
            );
        }
    }
    for line in json.iter().map(String::as_str).chain(text.lines()) {
        for secret in passwords
            .iter()
            .map(String::as_str)
            .chain(["demo-secret", "not-the-secret"])
        {
            assert!(!line.contains(secret), "a secret in {line}");
        }
    }

    // The events: each Warning says what to do; none carries Debug output.
    for name in ["lost", "broke", "badcreds"] {
        for event in world.events(name).await {
            let note = event.message.unwrap_or_default();
            assert!(!note.contains("Some(") && !note.contains("None"), "{note}");
            if event.type_.as_deref() == Some("Warning")
                && event.reason.as_deref() != Some("AwaitingCreateOutcome")
            {
                assert!(note.contains("What to do:"), "{name}: {note}");
            }
        }
    }
    let described = crate::support::run_ok(
        crate::support::install_crd()
            .kubectl()
            .args(["describe", "rh", "lost", "-n", &ns]),
    );
    println!("kubectl describe rh lost:\n{described}");
    let story = described.split("Events:").nth(1).unwrap_or_default();
    let at = |reason: &str| {
        story
            .find(reason)
            .unwrap_or_else(|| panic!("{reason}: {story}"))
    };
    assert!(at("AwaitingCreateOutcome") < at("AdoptedHost"));
    assert!(at("AdoptedHost") < at("HostNotFound"));
}
