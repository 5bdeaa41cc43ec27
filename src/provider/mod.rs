//! Client of the Xuandashi (Finovy) host-rental API: typed calls, tolerant decoding, the
//! token cache, a per-account rate limit and timeouts. Nothing secret reaches `Debug` or logs.

mod error;
mod limiter;
pub mod period;
mod token;
pub mod wire;

pub use error::{ProviderError, Refusal, explain, provider_detail};
pub use wire::{Billing, CreateRent, Host, HostPage, HostStatus, Image, Package};

pub use limiter::Priority;
use limiter::RateLimiter;
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};
use token::TokenCache;
use wire::Envelope;

pub const PRODUCTION_URL: &str = "https://client.xuandashi.com";
pub const SANDBOX_URL: &str = "https://client-sandbox.xuandashi.com";
/// Most hosts `mypage` returns per call.
pub const PAGE_SIZE: u32 = 25;
/// Pages read before a listing that never ends is an error (250,000 hosts).
const MAX_PAGES: u32 = 10_000;
/// Header carrying the token.
pub const TOKEN_HEADER: &str = "Finovy-Access-Token";

/// The endpoints, as bounded metric labels: the last word of each path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "camelCase")]
pub enum Endpoint {
    GetToken,
    Image,
    #[strum(serialize = "packAge")]
    Package,
    CreateRent,
    One,
    #[strum(serialize = "mypage")]
    MyPage,
    Operate,
    Reboot,
    Delete,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The largest answer read from this endpoint. A listing page of 25 hosts, or a
    /// catalogue, is tens of kilobytes; anything past the limit is provider garbage, read
    /// no further, so that no answer can take the operator past its memory limit.
    /// Where calls to this endpoint stand in the account's budget.
    pub fn priority(self) -> Priority {
        match self {
            Endpoint::CreateRent
            | Endpoint::Delete
            | Endpoint::Operate
            | Endpoint::Reboot
            | Endpoint::GetToken => Priority::Act,
            Endpoint::One | Endpoint::Package | Endpoint::Image => Priority::Look,
            Endpoint::MyPage => Priority::List,
        }
    }

    pub fn answer_limit(self) -> usize {
        const MIB: usize = 1024 * 1024;
        match self {
            Endpoint::MyPage | Endpoint::Package | Endpoint::Image => 2 * MIB,
            _ => MIB,
        }
    }
}

/// Account id and app secret. `Debug` shows the account id only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub uuid: String,
    secret: String,
}

impl Credentials {
    pub fn new(uuid: impl Into<String>, secret: impl Into<String>) -> Credentials {
        Credentials {
            uuid: uuid.into(),
            secret: secret.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("uuid", &self.uuid)
            .finish_non_exhaustive()
    }
}

/// One call of the API: the endpoint (for metrics and logs) and the HTTP request.
struct Call<'a> {
    endpoint: Endpoint,
    method: Method,
    path: &'a str,
    body: Option<&'a Value>,
    /// Set to when the request first went out (its turn in the rate limit came).
    sent: Option<&'a OnceLock<Instant>>,
}

impl<'a> Call<'a> {
    fn get(endpoint: Endpoint, path: &'a str) -> Call<'a> {
        Call {
            endpoint,
            method: Method::GET,
            path,
            body: None,
            sent: None,
        }
    }
}

/// Settings shared by every account's client (flags of `run`; the defaults live here).
#[derive(Debug, Clone, clap::Args)]
pub struct ClientSettings {
    /// Base URL of the provider API (production by default).
    #[arg(long = "provider-url", env = "PROVIDER_URL", default_value = PRODUCTION_URL)]
    pub base_url: String,
    /// Timeout of every provider call.
    #[arg(long = "request-timeout", default_value = "15s", value_parser = crate::config::positive_duration)]
    pub timeout: Duration,
    /// Provider requests per second per account.
    #[arg(long = "rate-limit", default_value_t = 5.0)]
    pub requests_per_second: f64,
    /// Provider request burst per account.
    #[arg(long, default_value_t = 10)]
    pub burst: u32,
    /// Provider calls in flight at once per account.
    #[arg(
        id = "provider_concurrency",
        long = "provider-concurrency",
        default_value_t = 4
    )]
    pub concurrency: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// Observes every provider call (for metrics): endpoint, outcome label, duration.
pub type CallObserver = Arc<dyn Fn(Endpoint, &'static str, Duration) + Send + Sync>;

/// The hosts of a listing being read, each once.
#[derive(Default)]
struct Listing {
    hosts: Vec<Host>,
    seen: std::collections::HashSet<String>,
}

impl Listing {
    /// Adds a page's hosts, shows the new ones to `shown`; whether the page was full (so
    /// another may follow).
    fn add(&mut self, page: HostPage, shown: &(dyn Fn(&[Host]) + Sync)) -> bool {
        let before = self.hosts.len();
        for host in page.data {
            if host
                .id
                .as_ref()
                .is_none_or(|id| self.seen.insert(id.clone()))
            {
                self.hosts.push(host);
            }
        }
        shown(&self.hosts[before..]);
        page.items >= PAGE_SIZE as usize
    }
}

/// A client for one account.
pub struct ProviderClient {
    http: reqwest::Client,
    settings: ClientSettings,
    credentials: Credentials,
    tokens: TokenCache,
    limiter: RateLimiter,
    observer: Option<CallObserver>,
}

impl std::fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderClient")
            .field("base_url", &self.settings.base_url)
            .field("account", &self.credentials.uuid)
            .finish_non_exhaustive()
    }
}

/// Installs the process-wide rustls crypto provider (ring); idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ProviderClient {
    pub fn new(
        settings: ClientSettings,
        credentials: Credentials,
        observer: Option<CallObserver>,
    ) -> ProviderClient {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .expect("the HTTP client configuration is static");
        ProviderClient {
            limiter: RateLimiter::new(
                settings.requests_per_second,
                settings.burst,
                settings.concurrency,
            ),
            http,
            settings,
            credentials,
            tokens: TokenCache::default(),
            observer,
        }
    }

    pub fn account(&self) -> &str {
        &self.credentials.uuid
    }

    /// Listing pages a second this account's budget gives while other calls are made.
    pub fn listing_rate(&self) -> f64 {
        self.limiter.listing_rate()
    }

    /// Whether creates, releases or power changes are waiting for the rate limit (or were a
    /// moment ago): an optional call would take their turn.
    pub async fn acts_waiting(&self) -> bool {
        self.limiter.acts_waiting().await
    }

    /// How long after it was sent a call may still take effect: twice the timeout (the
    /// budget a create records as its deadline).
    pub fn call_limit(&self) -> std::time::Duration {
        self.settings.timeout * 2
    }

    /// Whether creates, releases or power changes wait for their turn at this moment.
    pub fn acts_queued(&self) -> bool {
        self.limiter.acts_queued()
    }

    /// Whether an optional call now would neither wait nor delay a needed one.
    pub async fn has_headroom(&self) -> bool {
        self.limiter.has_headroom().await
    }

    async fn send(&self, call: &Call<'_>, token: Option<&str>) -> Result<Envelope, ProviderError> {
        let endpoint = call.endpoint;
        let _permit = self.limiter.acquire(endpoint.priority()).await;
        let started = Instant::now();
        if let Some(sent) = call.sent {
            let _ = sent.set(started);
        }
        let result = self.send_now(call, token).await;
        let took = started.elapsed();
        let outcome = match &result {
            Ok(_) => "0".to_string(),
            Err(ProviderError::Business { code, .. }) => code.to_string(),
            Err(e) => e.kind().to_string(),
        };
        if let Some(observe) = &self.observer {
            observe(endpoint, bounded_code_label(&outcome), took);
        }
        // Every call, at DEBUG: what a call came to is told by the transition it leads to.
        let trace_id = match &result {
            Ok(envelope) => envelope.trace_id.as_deref(),
            Err(error) => error.trace_id(),
        };
        let error = result.as_ref().err().map(tracing::field::display);
        tracing::debug!(endpoint = endpoint.as_str(), code = %outcome, traceId = trace_id, tookMs = took.as_millis() as u64, error, "provider call");
        result
    }

    async fn send_now(
        &self,
        call: &Call<'_>,
        token: Option<&str>,
    ) -> Result<Envelope, ProviderError> {
        let url = format!(
            "{}{}",
            self.settings.base_url.trim_end_matches('/'),
            call.path
        );
        let mut request = self.http.request(call.method.clone(), url);
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token);
        }
        if let Some(body) = call.body {
            request = request.json(body);
        }
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let limit = call.endpoint.answer_limit();
        let too_large = |size: u64| {
            ProviderError::Malformed(format!(
                "an answer of {size} bytes or more, past the {limit} bytes a {} answer may have",
                call.endpoint.as_str()
            ))
        };
        if let Some(size) = response.content_length().filter(|n| *n > limit as u64) {
            return Err(too_large(size));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > limit {
                return Err(too_large((bytes.len() + chunk.len()) as u64));
            }
            bytes.extend_from_slice(&chunk);
        }
        // Only a JSON object is an envelope (serde would read an array as a tuple struct).
        let envelope: Option<Envelope> = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
            .and_then(|v| serde_json::from_value(v).ok());
        match envelope {
            Some(Envelope { code: Some(0), .. }) if status.is_success() => Ok(envelope.unwrap()),
            Some(Envelope {
                code: Some(code),
                msg,
                trace_id,
                ..
            }) if code != 0 && (status.is_success() || code == 401) => {
                Err(ProviderError::Business {
                    code,
                    message: msg.unwrap_or_default(),
                    trace_id,
                })
            }
            _ if status == reqwest::StatusCode::UNAUTHORIZED => Err(ProviderError::Business {
                code: 401,
                message: String::new(),
                trace_id: None,
            }),
            _ if !status.is_success() => Err(ProviderError::HttpStatus(status.as_u16())),
            Some(_) => Err(ProviderError::Malformed(
                "an envelope without a code".into(),
            )),
            None => Err(ProviderError::Malformed(format!(
                "{} bytes that are not a JSON envelope",
                bytes.len()
            ))),
        }
    }

    async fn fetch_token(&self) -> Result<(String, Duration), ProviderError> {
        let body =
            serde_json::json!({"uuid": self.credentials.uuid, "secret": self.credentials.secret});
        let call = Call {
            endpoint: Endpoint::GetToken,
            method: Method::POST,
            path: "/v1/auth/getToken",
            body: Some(&body),
            sent: None,
        };
        let envelope = self.send(&call, None).await?;
        let data: wire::TokenData = serde_json::from_value(envelope.data).map_err(|_| {
            ProviderError::Malformed("getToken data is not {token, effectiveTime}".into())
        })?;
        let token = data
            .token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ProviderError::Malformed("getToken returned no token".into()))?;
        let lifetime = Duration::from_millis(
            data.effective_time
                .unwrap_or(0)
                .clamp(0, 7 * 24 * 3_600_000) as u64,
        );
        Ok((token, lifetime))
    }

    /// Makes an authenticated call, renewing the token once if the provider answers 401.
    async fn call(&self, call: Call<'_>) -> Result<Value, ProviderError> {
        let mut renewed = false;
        loop {
            let token = self
                .tokens
                .get(|| self.fetch_token())
                .await
                .map_err(|e| ProviderError::NotSent(Box::new(e)))?;
            match self.send(&call, Some(&token.value)).await {
                Err(ProviderError::Business { code: 401, .. }) if !renewed => {
                    tracing::debug!(
                        endpoint = call.endpoint.as_str(),
                        "the token expired or was revoked: renewing it (routine)"
                    );
                    self.tokens.reject(token.generation());
                    renewed = true;
                }
                other => return other.map(|e| e.data),
            }
        }
    }

    pub async fn images(&self) -> Result<Vec<Image>, ProviderError> {
        let data = self
            .call(Call::get(Endpoint::Image, "/v1/pve/open/image"))
            .await?;
        decode(data, "image list")
    }

    /// Packages of a type: 0 pay-as-you-go, 1 rental.
    pub async fn packages(&self, package_type: u8) -> Result<Vec<Package>, ProviderError> {
        let path = format!("/v1/pve/open/packAge/{package_type}");
        let data = self.call(Call::get(Endpoint::Package, &path)).await?;
        decode(data, "package list")
    }

    /// Rents a host; returns its id. Any error but `Business` is an unknown outcome.
    /// Rents a host; `sent` is set when the request first goes out (a call abandoned before
    /// then did nothing).
    pub async fn create_rent(
        &self,
        request: &CreateRent,
        sent: &OnceLock<Instant>,
    ) -> Result<String, ProviderError> {
        let body = serde_json::to_value(request).expect("CreateRent serializes");
        let data = self
            .call(Call {
                endpoint: Endpoint::CreateRent,
                method: Method::POST,
                path: "/v1/pve/open/createRent",
                body: Some(&body),
                sent: Some(sent),
            })
            .await?;
        match data {
            Value::String(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(ProviderError::Malformed(format!(
                "createRent data is a {}, not a host id",
                wire::kind(&other)
            ))),
        }
    }

    /// One host; `Ok(None)` when the provider answers without one.
    pub async fn host(&self, id: &str) -> Result<Option<Host>, ProviderError> {
        let path = format!("/v1/pve/open/one/{}", path_segment(id)?);
        let data = self.call(Call::get(Endpoint::One, &path)).await?;
        if data.is_null() {
            return Ok(None);
        }
        let host: Host = decode(data, "host")?;
        // An answer about a host is used only for the host asked about.
        match host.id.as_deref() {
            Some(shown) if shown == id => Ok(Some(host)),
            Some(_) => Err(ProviderError::Malformed(format!(
                "one/{id} answered about another host"
            ))),
            None => Err(ProviderError::Malformed(format!(
                "one/{id} answered a host without its id"
            ))),
        }
    }

    /// One page (from 1) of the account's hosts.
    pub async fn my_page(&self, page: u32, page_size: u32) -> Result<HostPage, ProviderError> {
        self.my_page_sent(page, page_size, None).await
    }

    /// [`ProviderClient::my_page`], setting `sent` to when the request went out.
    async fn my_page_sent(
        &self,
        page: u32,
        page_size: u32,
        sent: Option<&OnceLock<Instant>>,
    ) -> Result<HostPage, ProviderError> {
        let path = format!(
            "/v1/pve/open/mypage?page={page}&pageSize={}",
            page_size.min(PAGE_SIZE)
        );
        let call = Call {
            sent,
            ..Call::get(Endpoint::MyPage, &path)
        };
        let data = self.call(call).await?;
        decode(data, "host page")
    }

    /// Every host of the account, page by page until a short or empty page. `totalCounts`
    /// is only a hint (page-level or per item, number or string, or absent) and the order
    /// is unspecified, so neither ends the listing; a host seen twice (the pages shifted
    /// while they were read) is kept once. The pages the first one's total announces are
    /// read at once (the client's concurrency bounds the calls in flight); a listing then
    /// goes on page by page for as long as pages come back full.
    pub async fn all_hosts(&self) -> Result<Vec<Host>, ProviderError> {
        let (pages, sent) = (AtomicUsize::new(0), OnceLock::new());
        self.all_hosts_counting(&pages, &sent, &|_| {}).await
    }

    /// [`ProviderClient::all_hosts`], counting in `pages` the pages read so far (what a
    /// listing under way has cost until now), and setting `first_sent` to when the first
    /// page's request went out: every host created before then is in the listing (pages
    /// that wait their turn behind other calls start the listing late, not early).
    pub async fn all_hosts_counting(
        &self,
        pages: &AtomicUsize,
        first_sent: &OnceLock<Instant>,
        shown: &(dyn Fn(&[Host]) + Sync),
    ) -> Result<Vec<Host>, ProviderError> {
        let my_page = |page| async move {
            let read = self.my_page(page, PAGE_SIZE).await;
            pages.fetch_add(1, AtomicOrdering::Relaxed);
            read
        };
        let mut listing = Listing::default();
        let first = self.my_page_sent(1, PAGE_SIZE, Some(first_sent)).await?;
        pages.fetch_add(1, AtomicOrdering::Relaxed);
        let announced = first.total_counts.and_then(|t| u32::try_from(t).ok());
        let mut full = listing.add(first, shown);
        let mut next = 2;
        if let Some(total) = announced.filter(|_| full) {
            use futures::{StreamExt, TryStreamExt};
            let last = total.div_ceil(PAGE_SIZE).min(MAX_PAGES);
            // In order, as many at once as the client sends: a total that lies costs at most
            // that many pages past the first short one.
            let read = futures::stream::iter(next..=last)
                .map(my_page)
                .buffered(self.settings.concurrency.max(1));
            let mut read = std::pin::pin!(read);
            while let Some(page) = read.try_next().await? {
                full = listing.add(page, shown);
                if !full {
                    break;
                }
            }
            next = next.max(last + 1);
        }
        while full {
            if next > MAX_PAGES {
                return Err(ProviderError::Malformed(format!(
                    "mypage still returned full pages after {MAX_PAGES} pages"
                )));
            }
            full = listing.add(my_page(next).await?, shown);
            next += 1;
        }
        Ok(listing.hosts)
    }

    /// Starts (`true`) or shuts down (`false`) a host.
    pub async fn operate(&self, id: &str, start: bool) -> Result<bool, ProviderError> {
        let path = format!(
            "/v1/pve/open/operate/{}?type={}",
            path_segment(id)?,
            u8::from(start)
        );
        let data = self.call(Call::get(Endpoint::Operate, &path)).await?;
        Ok(data == Value::Bool(true))
    }

    pub async fn reboot(&self, id: &str) -> Result<bool, ProviderError> {
        let path = format!("/v1/pve/open/reboot/{}", path_segment(id)?);
        let data = self.call(Call::get(Endpoint::Reboot, &path)).await?;
        Ok(data == Value::Bool(true))
    }

    /// Releases a host; only `true` means it was deleted.
    pub async fn delete(&self, id: &str) -> Result<bool, ProviderError> {
        let path = format!("/v1/pve/open/delete/{}", path_segment(id)?);
        let data = self
            .call(Call {
                endpoint: Endpoint::Delete,
                method: Method::DELETE,
                path: &path,
                body: None,
                sent: None,
            })
            .await?;
        Ok(data == Value::Bool(true))
    }
}

fn transport(error: reqwest::Error) -> ProviderError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the answer was cut off"
    } else {
        "the request failed"
    };
    ProviderError::Transport(what.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(data: Value, what: &str) -> Result<T, ProviderError> {
    let shape = wire::kind(&data);
    serde_json::from_value(data).map_err(|_| {
        ProviderError::Malformed(format!("the {what} is a {shape} of an unexpected shape"))
    })
}

/// Whether `id` is in the provider's alphabet (letters, digits, `-`, `_`; the CRD's rule
/// too): only such an id reaches the provider as it is written.
pub fn is_provider_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A host id as a path segment: refused, never rewritten, when it is not one the provider
/// writes (dropping a stray character would name another host).
fn path_segment(id: &str) -> Result<&str, ProviderError> {
    match is_provider_id(id) {
        true => Ok(id),
        false => Err(ProviderError::UnsendableId(id.to_string())),
    }
}

/// Metric label for a call outcome: documented codes and error kinds only.
fn bounded_code_label(outcome: &str) -> &'static str {
    const KNOWN: [&str; 26] = [
        "0",
        "401",
        "500",
        "503",
        "1001",
        "1003",
        "1005",
        "1007",
        "1037",
        "6000",
        "6001",
        "6002",
        "6003",
        "6005",
        "7002",
        "7003",
        "7004",
        "7005",
        "9000",
        "9001",
        "transport",
        "http_status",
        "malformed",
        "business",
        "other",
        "",
    ];
    KNOWN
        .iter()
        .find(|k| **k == outcome)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_the_secret() {
        let shown = format!("{:?}", Credentials::new("acct", "s3cr3t-value"));
        assert!(shown.contains("acct") && !shown.contains("s3cr3t-value"));
    }

    #[test]
    fn host_ids_are_sent_as_written_or_not_at_all() {
        assert_eq!(path_segment("dyMFQQgHIW"), Ok("dyMFQQgHIW"));
        assert_eq!(path_segment("a-b_9"), Ok("a-b_9"));
        for stray in [
            "../delete/x?y",
            "ID.",
            "ID\u{200b}",
            "/ID",
            "ID ",
            "",
            "Ｉd",
            &"x".repeat(65),
        ] {
            assert_eq!(
                path_segment(stray),
                Err(ProviderError::UnsendableId(stray.to_string())),
                "{stray:?}"
            );
        }
    }

    #[test]
    fn endpoint_labels_are_the_paths_last_words() {
        use strum::IntoEnumIterator;
        let labels: Vec<&str> = Endpoint::iter().map(Endpoint::as_str).collect();
        assert_eq!(
            labels,
            [
                "getToken",
                "image",
                "packAge",
                "createRent",
                "one",
                "mypage",
                "operate",
                "reboot",
                "delete"
            ]
        );
    }

    #[test]
    fn metric_labels_are_bounded() {
        assert_eq!(bounded_code_label("6002"), "6002");
        assert_eq!(bounded_code_label("12345"), "other");
    }
}
