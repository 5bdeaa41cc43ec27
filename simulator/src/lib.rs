//! An in-memory simulator of the Xuandashi host-rental API (see `xds-api.md`), served over
//! real HTTP, with stateful accounts, catalogues, capacity and host lifecycles, fault
//! injection per endpoint and per-endpoint call counters. Tests drive it through
//! [`Simulator`]; `make demo` and `make bench` run its binary, `xds-simulator`. It is its own
//! crate so that neither its fault injection nor its demo credentials can reach the
//! operator's image, and so that it shares none of the client's types.

pub mod catalogue;
pub mod freedom;
mod state;
pub mod wire;

pub use freedom::Freedom;
pub use state::{Account, Fault, NewHost, SimHost, State, Timing};
pub use wire::{Endpoint, HostStatus};

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State as AxumState};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{delete, get, post};
use freedom::Unauthorized;
use parking_lot::{Mutex, MutexGuard};
use serde_json::{Value, json};
use state::Answer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use wire::TOKEN_HEADER;

/// A handle on a running simulator; clones share the state.
#[derive(Clone, Default)]
pub struct Simulator {
    state: Arc<Mutex<State>>,
}

type Params = Query<HashMap<String, String>>;

impl Simulator {
    pub fn new(state: State) -> Simulator {
        Simulator {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Locks the state for inspection or changes.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Serves on 127.0.0.1 at `port` (0 picks a free one); returns the bound address.
    pub async fn serve(
        &self,
        port: u16,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let app = self.router();
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "simulator stopped");
            }
        });
        Ok((addr, task))
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/auth/getToken", post(get_token))
            .route("/v1/pve/open/image", get(images))
            .route("/v1/pve/open/packAge/{type}", get(packages))
            .route("/v1/pve/open/createRent", post(create_rent))
            .route("/v1/pve/open/one/{id}", get(one))
            .route("/v1/pve/open/mypage", get(my_page))
            .route("/v1/pve/open/operate/{id}", get(operate))
            .route("/v1/pve/open/reboot/{id}", get(reboot))
            .route("/v1/pve/open/delete/{id}", delete(delete_host))
            .with_state(self.clone())
    }

    /// Puts `n` running rental hosts on `account`, rented an hour ago for a month, as a
    /// large account that someone already uses would have.
    pub fn populate(&self, account: &str, n: usize) {
        let mut state = self.state();
        let package = state
            .packages
            .iter()
            .find(|p| p.use_type.as_deref() != Some("0"))
            .cloned()
            .expect("the catalogue has a rental package");
        let image = state
            .images
            .iter()
            .find(|i| i.type_ == package.type_)
            .cloned()
            .expect("the catalogue has an image for it");
        let created = state::now_ms() - 3_600_000;
        let start_delay = std::mem::take(&mut state.timing.start_delay);
        for _ in 0..n {
            let new = state::NewHost {
                package: &package,
                image: &image,
                period_number: 1,
                period_type: 3,
                created,
            };
            state.add_host(account, new);
        }
        state.timing.start_delay = start_delay;
    }

    /// Calls made to an endpoint so far (faulted ones included).
    pub fn calls(&self, endpoint: Endpoint) -> u64 {
        self.state().calls.get(&endpoint).copied().unwrap_or(0)
    }

    /// When each call of an endpoint arrived.
    pub fn call_times(&self, endpoint: Endpoint) -> Vec<std::time::Instant> {
        self.state()
            .call_log
            .iter()
            .filter(|(e, _)| *e == endpoint)
            .map(|(_, t)| *t)
            .collect()
    }

    /// Queues faults for the next calls of an endpoint, one per call.
    pub fn inject(&self, endpoint: Endpoint, faults: impl IntoIterator<Item = Fault>) {
        self.state()
            .faults
            .entry(endpoint)
            .or_default()
            .extend(faults);
    }

    /// Adds an account.
    pub fn add_account(&self, uuid: &str, account: Account) {
        self.state().accounts.insert(uuid.to_string(), account);
    }

    /// Changes an account (its balance, verification, wallet).
    pub fn update_account(&self, uuid: &str, change: impl FnOnce(&mut Account)) {
        if let Some(account) = self.state().accounts.get_mut(uuid) {
            change(account);
        }
    }

    /// Sets how many more hosts a package can create.
    pub fn set_capacity(&self, package_id: &str, hosts: u32) {
        self.state().capacity.insert(package_id.to_string(), hosts);
    }

    /// Makes createRent answer 6005 for the next `n` calls that would otherwise succeed.
    pub fn set_create_waits(&self, n: u32) {
        self.state().create_waits = n;
    }

    /// Invalidates every issued token.
    pub fn expire_tokens(&self) {
        self.state().expire_tokens();
    }

    /// Ids of every host, of every account.
    pub fn host_ids(&self) -> Vec<String> {
        self.state().hosts.keys().cloned().collect()
    }

    /// A host's status as the provider would report it now.
    pub fn host_status(&self, id: &str) -> Option<HostStatus> {
        let mut state = self.state();
        state.settle_hosts();
        state.hosts.get(id).map(SimHost::status)
    }

    /// Changes a host's status at once (as if done from the provider's console).
    pub fn set_host_status(&self, id: &str, status: HostStatus) {
        if let Some(h) = self.state().hosts.get_mut(id) {
            h.set_status(status);
        }
    }

    /// Removes a host as if released outside the operator.
    pub fn remove_host(&self, id: &str) {
        self.state().remove_host(id);
    }
}

async fn respond(
    sim: Simulator,
    endpoint: Endpoint,
    work: impl FnOnce(&mut State) -> Answer,
) -> Response {
    let latency = sim.state().timing.latency;
    tokio::time::sleep(latency).await;
    let (fault, envelope, status) = {
        let mut state = sim.state();
        state.count(endpoint);
        let fault = state.take_fault(endpoint);
        let answer = match &fault {
            Some(f) if !f.commits() => None,
            _ => Some(work(&mut state)),
        };
        let freedom = state.freedom;
        let status = match &answer {
            Some(a) if a.code == 401 && freedom.unauthorized == Unauthorized::HttpStatus => {
                StatusCode::UNAUTHORIZED
            }
            _ => StatusCode::OK,
        };
        let envelope = answer.map(|a| {
            let mut v = json!({"code": a.code, "msg": a.msg, "data": a.data, "traceId": state.next_trace_id()});
            if !freedom.omit_success {
                v["success"] = json!(a.code == 0);
            }
            v
        });
        (fault, envelope, status)
    };
    let json = |v: Value| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string()))
            .expect("static response parts")
    };
    let gateway_page = || {
        Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from(
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            ))
            .expect("static response parts")
    };
    match (fault, envelope) {
        (None, Some(v)) => json(v),
        (Some(Fault::Latency(delay)), Some(v)) => {
            tokio::time::sleep(delay).await;
            json(v)
        }
        (Some(Fault::ServerError | Fault::ServerErrorAfterCommit), _) => gateway_page(),
        (Some(Fault::NonJson), _) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from("<html>system busy</html>"))
            .expect("static response parts"),
        (Some(Fault::NotDone), _) => {
            let v = json!({"code": 0, "msg": "success", "data": false, "traceId": "sim-notdone"});
            json(v)
        }
        (Some(Fault::OtherHost), Some(mut v)) => {
            if let Some(id) = v["data"].get_mut("id") {
                *id = json!(format!("{}x", id.as_str().unwrap_or_default()));
            }
            json(v)
        }
        (Some(Fault::HugeBody(size)), _) => {
            const CHUNK: usize = 64 * 1024;
            let head = bytes::Bytes::from_static(b"{\"code\":0,\"data\":\"");
            let filler = bytes::Bytes::from(vec![b'x'; CHUNK]);
            let chunks = size.saturating_sub(head.len()).div_ceil(CHUNK);
            let body = futures::stream::iter(
                std::iter::once(head)
                    .chain(std::iter::repeat_n(filler, chunks))
                    .map(Ok::<_, std::io::Error>),
            );
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(body))
                .expect("static response parts")
        }
        (Some(Fault::DropAfterCommit), _) => {
            let cut = futures::stream::iter([
                Ok(bytes::Bytes::from_static(b"{\"code\":0,")),
                Err(std::io::Error::other(
                    "connection dropped by fault injection",
                )),
            ]);
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(cut))
                .expect("static response parts")
        }
        (_, None) => gateway_page(),
    }
}

/// What every handler behind a token gets: the simulator and the request's token.
struct Caller {
    sim: Simulator,
    token: Option<String>,
}

impl FromRequestParts<Simulator> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        sim: &Simulator,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok());
        Ok(Caller {
            sim: sim.clone(),
            token: token.map(str::to_string),
        })
    }
}

impl Caller {
    /// The work's answer for the token's account, or the 401 answer.
    async fn answer(
        self,
        endpoint: Endpoint,
        work: impl FnOnce(&mut State, &str) -> Answer,
    ) -> Response {
        let token = self.token;
        respond(self.sim, endpoint, move |state| {
            match state.authenticate(token.as_deref()) {
                Some(account) => work(state, &account),
                None => Answer {
                    code: 401,
                    msg: "token无效或已过期",
                    data: Value::Null,
                },
            }
        })
        .await
    }
}

async fn get_token(AxumState(sim): AxumState<Simulator>, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    respond(sim, Endpoint::GetToken, |s| s.get_token(&body)).await
}

async fn images(caller: Caller) -> Response {
    caller.answer(Endpoint::Image, |s, _| s.images()).await
}

async fn packages(caller: Caller, Path(t): Path<String>) -> Response {
    caller
        .answer(Endpoint::Package, |s, _| s.packages(&t))
        .await
}

async fn create_rent(caller: Caller, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    caller
        .answer(Endpoint::CreateRent, |s, a| s.create_rent(a, &body))
        .await
}

async fn one(caller: Caller, Path(id): Path<String>) -> Response {
    caller.answer(Endpoint::One, |s, a| s.one(a, &id)).await
}

async fn my_page(caller: Caller, Query(q): Params) -> Response {
    let page = q.get("page").map(String::as_str);
    let size = q.get("pageSize").map(String::as_str);
    caller
        .answer(Endpoint::MyPage, |s, a| s.my_page(a, page, size))
        .await
}

async fn operate(caller: Caller, Path(id): Path<String>, Query(q): Params) -> Response {
    let kind = q.get("type").map(String::as_str);
    caller
        .answer(Endpoint::Operate, |s, a| s.operate(a, &id, kind))
        .await
}

async fn reboot(caller: Caller, Path(id): Path<String>) -> Response {
    caller
        .answer(Endpoint::Reboot, |s, a| s.reboot(a, &id))
        .await
}

async fn delete_host(caller: Caller, Path(id): Path<String>) -> Response {
    caller
        .answer(Endpoint::Delete, |s, a| s.delete(a, &id))
        .await
}

/// Timing for tests: hosts start and stop in `transition`.
pub fn fast_timing(transition: Duration) -> Timing {
    Timing {
        start_delay: transition,
        stop_delay: transition,
        ..Timing::default()
    }
}
