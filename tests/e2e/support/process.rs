//! Processes the tests start (the simulator, the operator binary, the image): killed when
//! the test ends however it ends, and waited on over HTTP.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The operator binary cargo built for these tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_rentedhost-operator");

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `url` answers a success.
pub async fn wait_http(url: &str, limit: Duration) {
    assert!(ready_within(url, limit).await, "{url} not ready within {limit:?}");
}

/// Whether `url` answers a success within `limit`.
pub async fn ready_within(url: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The provider simulator as its own process (the binary's `simulate`), and its port.
pub async fn simulator() -> (Process, u16) {
    let port = free_port();
    let process = Process(
        Command::new(BINARY)
            .args([
                "simulate",
                "--port",
                &port.to_string(),
                "--transition-time",
                "500ms",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_http(
        &format!("http://127.0.0.1:{port}/v1/pve/open/image"),
        Duration::from_secs(10),
    )
    .await;
    (process, port)
}

/// How many hosts the simulator's demo account holds, asked over its API.
pub async fn demo_hosts(port: u16) -> i64 {
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("http://127.0.0.1:{port}/v1/auth/getToken"))
        .json(&serde_json::json!({"uuid": "demo-account", "secret": "demo-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page: serde_json::Value = http
        .get(format!(
            "http://127.0.0.1:{port}/v1/pve/open/mypage?page=1&pageSize=25"
        ))
        .header(
            "Finovy-Access-Token",
            token["data"]["token"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["data"]["totalCounts"]
        .as_i64()
        .unwrap_or_else(|| panic!("{page}"))
}
