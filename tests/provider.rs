//! The provider client against the simulator (and against hand-written odd answers) over
//! real HTTP: tolerant decoding, error classification, tokens, pagination, rate limit.

use axum::Router;
use axum::routing::{get, post};
use rentedhost_operator::provider::{
    ClientSettings, CreateRent, Credentials, ProviderClient, ProviderError,
};
use std::time::{Duration, Instant};
use xds_simulator::Endpoint;
use xds_simulator::{Fault, Simulator, catalogue::DEMO_ACCOUNT};

async fn simulator() -> (Simulator, ProviderClient) {
    let sim = Simulator::default();
    let (addr, _) = sim.serve(0).await.unwrap();
    let settings = ClientSettings {
        base_url: format!("http://{addr}"),
        timeout: Duration::from_secs(2),
        requests_per_second: 1000.0,
        burst: 1000,
        concurrency: 8,
    };
    let client = ProviderClient::new(
        settings,
        Credentials::new(DEMO_ACCOUNT.0, DEMO_ACCOUNT.1),
        None,
    );
    (sim, client)
}

fn rent(package: &str, image: &str) -> CreateRent {
    CreateRent {
        package_id: package.into(),
        image_id: image.into(),
        period_number: 5,
        period_type: 3,
    }
}

#[tokio::test]
async fn catalogue_create_observe_operate_reboot_delete() {
    let (sim, client) = simulator().await;
    let images = client.images().await.unwrap();
    assert!(
        images
            .iter()
            .any(|i| i.image_id.as_deref() == Some("507") && i.type_.as_deref() == Some("ceph"))
    );
    let rental = client.packages(1).await.unwrap();
    let gpu = rental
        .iter()
        .find(|p| p.package_id.as_deref() == Some("teTapaSUFq"))
        .unwrap();
    assert_eq!(
        gpu.amount.as_deref(),
        Some("2.5"),
        "a price sent as a number is read"
    );
    assert!(rental.iter().all(|p| p.use_type.as_deref() != Some("0")));
    assert!(
        client
            .packages(0)
            .await
            .unwrap()
            .iter()
            .all(|p| p.use_type.as_deref() != Some("1"))
    );
    let id = client
        .create_rent(&rent("teTapaSUFq", "507"), &Default::default())
        .await
        .unwrap();
    assert_eq!(id.len(), 10);
    let host = client.host(&id).await.unwrap().unwrap();
    assert_eq!(host.status.as_deref(), Some("1"), "a new host is starting");
    let expires = host.expiration_time.unwrap() - host.create_time.unwrap();
    assert_eq!(expires, 5 * 720 * 3_600_000, "five months of 720 hours");
    sim.set_host_status(&id, xds_simulator::HostStatus::Running);
    assert!(client.operate(&id, false).await.unwrap());
    assert_eq!(
        client.operate(&id, false).await.unwrap_err().code(),
        Some(6001),
        "stopping: wait"
    );
    sim.set_host_status(&id, xds_simulator::HostStatus::Stopped);
    assert_eq!(client.reboot(&id).await.unwrap_err().code(), Some(7002));
    assert!(client.operate(&id, true).await.unwrap());
    assert_eq!(
        client.reboot(&id).await.unwrap_err().code(),
        Some(7004),
        "starting is not running"
    );
    assert!(client.delete(&id).await.unwrap());
    assert_eq!(client.delete(&id).await.unwrap_err().code(), Some(1003));
    assert!(client.all_hosts().await.unwrap().is_empty());
    assert_eq!(
        sim.calls(Endpoint::GetToken),
        1,
        "one token serves every call"
    );
}

#[tokio::test]
async fn business_errors_are_proven_refusals_and_transport_faults_are_not() {
    let (sim, client) = simulator().await;
    let e = client
        .create_rent(&rent("teTapaSUFq", "4005"), &Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(7005));
    assert!(e.is_proven_refusal());
    assert!(e.trace_id().is_some_and(|t| t.starts_with("sim-")));
    assert_eq!(e.provider_message(), Some("主机配置类型与镜像类型不一致"));
    for fault in [
        Fault::ServerError,
        Fault::NonJson,
        Fault::DropAfterCommit,
        Fault::ServerErrorAfterCommit,
        Fault::Latency(Duration::from_secs(3)),
    ] {
        sim.inject(Endpoint::CreateRent, [fault.clone()]);
        let e = client
            .create_rent(&rent("teTapaSUFq", "507"), &Default::default())
            .await
            .unwrap_err();
        assert!(!e.is_proven_refusal(), "{fault:?} gave {e:?}");
    }
    // The committed ones left hosts behind: exactly the faults that commit.
    assert_eq!(sim.host_ids().len(), 3);
}

#[tokio::test]
async fn an_expired_token_is_renewed_once_and_a_wrong_secret_fails_after_one_try() {
    let (sim, client) = simulator().await;
    client.images().await.unwrap();
    sim.expire_tokens();
    let mut tasks = Vec::new();
    let client = std::sync::Arc::new(client);
    for _ in 0..10 {
        let c = client.clone();
        tasks.push(tokio::spawn(
            async move { c.images().await.map(|i| i.len()) },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 3);
    }
    assert_eq!(
        sim.calls(Endpoint::GetToken),
        2,
        "ten concurrent 401s share one renewal"
    );

    let (sim, _) = simulator().await;
    let (addr, _) = sim.serve(0).await.unwrap();
    let settings = ClientSettings {
        base_url: format!("http://{addr}"),
        ..ClientSettings::default()
    };
    let wrong = ProviderClient::new(settings, Credentials::new(DEMO_ACCOUNT.0, "wrong"), None);
    let e = wrong.images().await.unwrap_err();
    assert_eq!(e.code(), Some(401));
    assert!(
        !format!("{wrong:?}").contains("wrong"),
        "Debug never shows the secret"
    );
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire() {
    let (sim, client) = simulator().await;
    // Margins of half a second or more each side, for a busy machine: the token is taken
    // at `start`, reused at 1 s (20 %), renewed at 4.5 s (90 %, before it expires at 5 s).
    sim.state().timing.token_lifetime = Duration::from_secs(5);
    let start = tokio::time::Instant::now();
    client.images().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.images().await.unwrap();
    assert_eq!(
        sim.calls(Endpoint::GetToken),
        1,
        "reused below 80 % of its lifetime"
    );
    tokio::time::sleep_until(start + Duration::from_millis(4500)).await;
    client.images().await.unwrap();
    assert_eq!(
        sim.calls(Endpoint::GetToken),
        2,
        "renewed past 80 %, before any 401"
    );
    assert_eq!(sim.calls(Endpoint::Image), 3, "no call was refused");
}

#[tokio::test]
async fn sixty_hosts_take_three_pages() {
    let (sim, client) = simulator().await;
    for _ in 0..60 {
        client
            .create_rent(&rent("kQvBmLtRzA", "507"), &Default::default())
            .await
            .unwrap();
    }
    let before = sim.calls(Endpoint::MyPage);
    let hosts = client.all_hosts().await.unwrap();
    assert_eq!(hosts.len(), 60);
    assert_eq!(sim.calls(Endpoint::MyPage) - before, 3);
    let page = client.my_page(1, 100).await.unwrap();
    assert_eq!(page.data.len(), 25, "pageSize is capped at 25");
    assert_eq!(page.total_counts, Some(60));
}

/// Every reading of the API's freedoms (order, totals, success, 401 style, unknown-host
/// answers) gives the client the same complete listing and the same verdicts.
#[tokio::test]
async fn every_reading_of_the_documentation_gives_the_same_answers() {
    use xds_simulator::Freedom;
    for freedom in Freedom::each() {
        let (sim, client) = simulator().await;
        sim.state().freedom = freedom;
        let preloaded = sim.state().preload_hosts(DEMO_ACCOUNT.0, 50);
        let mut made = Vec::new();
        for _ in 0..5 {
            made.push(
                client
                    .create_rent(&rent("kQvBmLtRzA", "507"), &Default::default())
                    .await
                    .unwrap(),
            );
        }
        let mut listed: Vec<String> = client
            .all_hosts()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|h| h.id)
            .collect();
        listed.sort();
        let mut want: Vec<String> = preloaded.iter().chain(&made).cloned().collect();
        want.sort();
        assert_eq!(listed, want, "{freedom:?}: a complete listing");
        // 55 hosts: pages of 25, 25 and 5.
        assert_eq!(sim.calls(Endpoint::MyPage), 3, "{freedom:?}");
        let unknown = client.host("NoSuchHost").await.unwrap_err();
        assert!(unknown.denies_host(), "{freedom:?}: {unknown:?}");
        assert!(
            !client.delete("NoSuchHost").await.unwrap_or(false),
            "{freedom:?}"
        );
        assert!(client.delete(&made[0]).await.unwrap(), "{freedom:?}");
        sim.expire_tokens();
        assert!(
            client.host(&made[1]).await.unwrap().is_some(),
            "{freedom:?}: renewed"
        );
        assert_eq!(sim.calls(Endpoint::GetToken), 2, "{freedom:?}");
    }
}

#[tokio::test]
async fn the_rate_limit_holds_per_account() {
    let sim = Simulator::default();
    let (addr, _) = sim.serve(0).await.unwrap();
    let settings = ClientSettings {
        base_url: format!("http://{addr}"),
        requests_per_second: 20.0,
        burst: 5,
        ..ClientSettings::default()
    };
    let client = ProviderClient::new(
        settings,
        Credentials::new(DEMO_ACCOUNT.0, DEMO_ACCOUNT.1),
        None,
    );
    let start = Instant::now();
    for _ in 0..15 {
        client.images().await.unwrap();
    }
    // 16 requests (one getToken): 5 at once, 11 more at 20/s.
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}

/// A server answering every path with fixed odd bodies, as real gateways and APIs do.
async fn odd_server(token_body: &'static str, body: &'static str) -> ProviderClient {
    let app = Router::new()
        .route("/v1/auth/getToken", post(move || async move { token_body }))
        .route("/v1/pve/open/createRent", post(move || async move { body }))
        .route("/v1/pve/open/one/{id}", get(move || async move { body }))
        .route("/v1/pve/open/mypage", get(move || async move { body }))
        .route("/v1/pve/open/image", get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let settings = ClientSettings {
        base_url: format!("http://{addr}"),
        timeout: Duration::from_secs(2),
        ..ClientSettings::default()
    };
    ProviderClient::new(settings, Credentials::new("a", "b"), None)
}

const TOKEN: &str = r#"{"code":"0","data":{"token":"t","effectiveTime":"1800000"}}"#;

#[tokio::test]
async fn tolerant_decoding_of_odd_but_valid_answers() {
    let client = odd_server(
        TOKEN,
        r#"{"code":0,"data":"dyMFQQgHIW","msg":"success","traceId":"x"}"#,
    )
    .await;
    assert_eq!(
        client
            .create_rent(&rent("p", "i"), &Default::default())
            .await
            .unwrap(),
        "dyMFQQgHIW",
        "no `success` field"
    );
    let client = odd_server(
        TOKEN,
        r#"{"code":0,"data":{"data":[{"id":"h1","cpu":"8","memory":32,"port":"5000","gpuNumber":null,"status":2,"createTime":"1764140400000","new":1}],"totalCounts":"1"}}"#,
    )
    .await;
    let hosts = client.all_hosts().await.unwrap();
    assert_eq!(
        (hosts[0].cpu, hosts[0].port, hosts[0].gpu_number),
        (Some(8), Some(5000), None)
    );
    assert_eq!(hosts[0].status.as_deref(), Some("2"));
}

#[tokio::test]
async fn garbage_answers_are_errors_never_panics() {
    let cases = [
        (r#"{"code":0,"data":null}"#, "malformed"),
        (r#"{"code":0,"data":{"unexpected":true}}"#, "malformed"),
        (r#"{"code":0,"data":""}"#, "malformed"),
        (r#"{"msg":"no code"}"#, "malformed"),
        (r#"<html>gateway</html>"#, "malformed"),
        (r#"[1,2,3]"#, "malformed"),
        (r#"{"code":"6005","msg":"创建等待"}"#, "business"),
        (r#"{"code":6002.0,"msg":null,"traceId":12}"#, "business"),
    ];
    for (body, kind) in cases {
        let client = odd_server(TOKEN, body).await;
        let e = client
            .create_rent(&rent("p", "i"), &Default::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), kind, "{body} gave {e:?}");
        let _ = client.host("x").await;
        let _ = client.all_hosts().await;
        let _ = client.images().await;
    }
    let client = odd_server(r#"{"code":0,"data":{"token":null}}"#, "{}").await;
    assert!(matches!(
        client.images().await,
        Err(ProviderError::NotSent(inner)) if matches!(*inner, ProviderError::Malformed(_))
    ));
    // Without a token createRent is never sent: a proven non-create, not an unknown outcome.
    let refused = client
        .create_rent(&rent("p", "i"), &Default::default())
        .await
        .unwrap_err();
    assert!(refused.is_proven_refusal(), "{refused:?}");
}

/// Issue 22, finding 2: an id with a stray character is refused before anything is sent,
/// never rewritten into another host's id; an answer about another host is not taken.
#[tokio::test]
async fn stray_host_ids_are_refused_and_answers_must_name_the_host_asked_about() {
    let (sim, client) = simulator().await;
    let id = client
        .create_rent(&rent("teTapaSUFq", "507"), &Default::default())
        .await
        .unwrap();
    let before = sim.state().calls.values().sum::<u64>();
    for stray in [
        format!("{id}."),
        format!("{id}\u{200b}"),
        format!("/{id}"),
        format!("{id} "),
    ] {
        let refused = ProviderError::UnsendableId(stray.clone());
        assert_eq!(client.host(&stray).await.unwrap_err(), refused);
        assert_eq!(client.delete(&stray).await.unwrap_err(), refused);
        assert_eq!(client.operate(&stray, false).await.unwrap_err(), refused);
        assert_eq!(client.reboot(&stray).await.unwrap_err(), refused);
        assert!(refused.is_proven_refusal(), "nothing was sent");
    }
    assert_eq!(
        sim.state().calls.values().sum::<u64>(),
        before,
        "no call reached the provider"
    );
    assert!(sim.host_ids().contains(&id), "the host is untouched");
    sim.inject(Endpoint::One, [Fault::OtherHost]);
    let other = client.host(&id).await.unwrap_err();
    assert!(
        matches!(&other, ProviderError::Malformed(m) if m.contains("another host")),
        "{other:?}"
    );
    assert!(
        !other.denies_host(),
        "garbage proves nothing about the host"
    );
    let host = client.host(&id).await.unwrap().unwrap();
    assert_eq!(host.id.as_deref(), Some(id.as_str()));
}

/// Issue 22, finding 8: an answer past its endpoint's limit is provider garbage, read no
/// further; for createRent it is an unknown outcome.
#[tokio::test]
async fn oversized_answers_are_garbage_read_no_further() {
    let (sim, client) = simulator().await;
    const HUGE: usize = 64 * 1024 * 1024;
    sim.inject(Endpoint::MyPage, [Fault::HugeBody(HUGE)]);
    let listing = client.all_hosts().await.unwrap_err();
    assert!(
        matches!(&listing, ProviderError::Malformed(m) if m.contains("2097152 bytes")),
        "{listing:?}"
    );
    sim.inject(Endpoint::CreateRent, [Fault::HugeBody(HUGE)]);
    let create = client
        .create_rent(&rent("teTapaSUFq", "507"), &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(create, ProviderError::Malformed(_)) && !create.is_proven_refusal(),
        "an unknown outcome: {create:?}"
    );
    assert_eq!(sim.host_ids().len(), 1, "the create happened all the same");
    let listed = client.all_hosts().await.unwrap();
    assert_eq!(listed.len(), 1, "the next answers are read as usual");
}
