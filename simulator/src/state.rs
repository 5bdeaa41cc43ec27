//! The simulator's state and the provider's business rules, without HTTP.

use super::catalogue;
use super::freedom::{DeleteUnknown, Freedom, HostOrder, TotalCounts, id_hash};
use crate::wire::{CreateRent, Endpoint, Host, HostStatus, Image, Package};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An injected fault, consumed by one call of the endpoint it was queued for.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Do the work, then answer after this delay.
    Latency(Duration),
    /// A gateway's HTTP 502 page; the work is not done.
    ServerError,
    /// The work is done, then a gateway's HTTP 502 page.
    ServerErrorAfterCommit,
    /// HTTP 200 with a body that is not JSON; the work is not done.
    NonJson,
    /// The work is done, then the connection drops mid-answer (the answer is lost).
    DropAfterCommit,
    /// A well-formed success envelope with `data: false`; the work is not done (as
    /// `delete` may answer for a host it did not delete).
    NotDone,
    /// The work is done, and the answer's `data` speaks of another host (its `id` changed):
    /// an answer no client may take for the host it asked about.
    OtherHost,
    /// The work is done, then an answer of this many bytes (a JSON envelope that never
    /// ends), streamed without being held in memory.
    HugeBody(usize),
}

impl Fault {
    /// Whether the call's work happens despite the fault.
    pub fn commits(&self) -> bool {
        matches!(
            self,
            Fault::Latency(_)
                | Fault::ServerErrorAfterCommit
                | Fault::DropAfterCommit
                | Fault::OtherHost
                | Fault::HugeBody(_)
        )
    }
}

#[derive(Debug, Clone)]
pub struct Account {
    pub secret: String,
    pub balance: f64,
    pub real_name_verified: bool,
    pub wallet_error: bool,
}

#[derive(Debug, Clone)]
pub struct SimHost {
    pub host: Host,
    pub owner: String,
    pub package_id: String,
    status: HostStatus,
    /// Status reached when the current transition's delay has passed.
    settles_to: Option<(HostStatus, Instant)>,
}

/// A host to put on an account.
pub struct NewHost<'a> {
    pub package: &'a Package,
    pub image: &'a Image,
    pub period_number: u32,
    pub period_type: u8,
    /// Creation time, epoch milliseconds.
    pub created: i64,
}

/// Timings of the simulated provider.
#[derive(Debug, Clone)]
pub struct Timing {
    pub token_lifetime: Duration,
    pub start_delay: Duration,
    pub stop_delay: Duration,
    /// Time every answer takes, on top of injected latency.
    pub latency: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            token_lifetime: Duration::from_secs(1800),
            start_delay: Duration::from_secs(3),
            stop_delay: Duration::from_secs(3),
            latency: Duration::ZERO,
        }
    }
}

pub struct State {
    pub accounts: HashMap<String, Account>,
    tokens: HashMap<String, (String, Instant)>,
    /// Every token ever issued, expired or not: what a leak scan looks for.
    pub issued_tokens: Vec<String>,
    /// Every host password ever handed out, released hosts' too.
    pub issued_passwords: Vec<String>,
    pub packages: Vec<Package>,
    pub images: Vec<Image>,
    /// Hosts each package can still create; a package absent here is unlimited.
    pub capacity: HashMap<String, u32>,
    pub hosts: BTreeMap<String, SimHost>,
    /// createRent answers 6005 this many more times.
    pub create_waits: u32,
    /// Every well-formed createRent body the provider worked on, in order.
    pub create_requests: Vec<CreateRent>,
    /// Every host createRent made (released ones too): its id and package.
    pub rented: Vec<(String, String)>,
    pub faults: HashMap<Endpoint, VecDeque<Fault>>,
    pub calls: HashMap<Endpoint, u64>,
    /// When each call arrived, in order.
    pub call_log: Vec<(Endpoint, Instant)>,
    /// Listings begun: `mypage` calls for the first page.
    pub listings: u64,
    pub timing: Timing,
    /// Which reading of the documentation's freedoms this provider follows.
    pub freedom: Freedom,
    trace: u64,
    /// Each account's host ids in listing order, kept between pages (a listing of N hosts
    /// must not sort N hosts N/25 times); cleared when hosts come or go.
    listing_order: HashMap<(String, HostOrder), Vec<String>>,
}

/// What a handler answers: the envelope's code, msg and data.
pub struct Answer {
    pub code: i64,
    pub msg: &'static str,
    pub data: Value,
}

impl Answer {
    fn ok(data: Value) -> Answer {
        Answer {
            code: 0,
            msg: "success",
            data,
        }
    }
    fn err(code: i64, msg: &'static str) -> Answer {
        Answer {
            code,
            msg,
            data: Value::Null,
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn random_letters(n: usize) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..n)
        .map(|_| LETTERS[rand::random_range(0..LETTERS.len())] as char)
        .collect()
}

fn period_hours(period_type: u8) -> Option<f64> {
    Some(match period_type {
        0 => 1.0,
        1 => 24.0,
        2 => 168.0,
        3 => 720.0,
        4 => 2160.0,
        5 => 8760.0,
        _ => return None,
    })
}

impl Default for State {
    fn default() -> Self {
        let (uuid, secret) = catalogue::DEMO_ACCOUNT;
        let mut accounts = HashMap::new();
        accounts.insert(
            uuid.to_string(),
            Account {
                secret: secret.to_string(),
                balance: 1_000_000.0,
                real_name_verified: true,
                wallet_error: false,
            },
        );
        State {
            accounts,
            tokens: HashMap::new(),
            issued_tokens: Vec::new(),
            issued_passwords: Vec::new(),
            packages: catalogue::packages(),
            images: catalogue::images(),
            capacity: HashMap::new(),
            hosts: BTreeMap::new(),
            create_waits: 0,
            create_requests: Vec::new(),
            rented: Vec::new(),
            faults: HashMap::new(),
            calls: HashMap::new(),
            call_log: Vec::new(),
            listings: 0,
            timing: Timing::default(),
            freedom: Freedom::default(),
            trace: 0,
            listing_order: HashMap::new(),
        }
    }
}

impl SimHost {
    pub fn status(&self) -> HostStatus {
        self.status
    }

    fn settle(&mut self, now: Instant) {
        if let Some((to, at)) = self.settles_to
            && now >= at
        {
            self.status = to;
            self.settles_to = None;
        }
        if self.status != HostStatus::Expired
            && self.host.expiration_time.is_some_and(|e| e <= now_ms())
        {
            self.status = HostStatus::Expired;
            self.settles_to = None;
        }
        self.host.status = Some(self.status.code().to_string());
    }

    pub fn transition(&mut self, via: HostStatus, to: HostStatus, delay: Duration) {
        self.status = via;
        self.settles_to = Some((to, Instant::now() + delay));
        self.host.status = Some(via.code().to_string());
    }

    pub fn set_status(&mut self, status: HostStatus) {
        self.status = status;
        self.settles_to = None;
        self.host.status = Some(status.code().to_string());
    }
}

impl State {
    pub fn next_trace_id(&mut self) -> String {
        self.trace += 1;
        format!("sim-{:08x}-{}", self.trace, random_letters(6))
    }

    pub fn count(&mut self, endpoint: Endpoint) {
        *self.calls.entry(endpoint).or_default() += 1;
        self.call_log.push((endpoint, Instant::now()));
    }

    pub fn take_fault(&mut self, endpoint: Endpoint) -> Option<Fault> {
        self.faults.get_mut(&endpoint).and_then(VecDeque::pop_front)
    }

    /// Removes a host (released, or gone outside the operator).
    pub fn remove_host(&mut self, id: &str) {
        if self.hosts.remove(id).is_some() {
            self.listing_order.clear();
        }
    }

    pub fn settle_hosts(&mut self) {
        let now = Instant::now();
        for host in self.hosts.values_mut() {
            host.settle(now);
        }
    }

    pub fn expire_tokens(&mut self) {
        self.tokens.clear();
    }

    /// The account a token belongs to, if the token is valid.
    pub fn authenticate(&self, token: Option<&str>) -> Option<String> {
        let (uuid, expires) = self.tokens.get(token?)?;
        (Instant::now() < *expires).then(|| uuid.clone())
    }

    pub fn get_token(&mut self, body: &Value) -> Answer {
        let (Some(uuid), Some(secret)) = (
            body.get("uuid").and_then(Value::as_str),
            body.get("secret").and_then(Value::as_str),
        ) else {
            return Answer::err(1007, "缺少必要参数");
        };
        match self.accounts.get(uuid) {
            Some(account) if account.secret == secret => {
                let token = random_letters(22);
                let lifetime = self.timing.token_lifetime;
                self.tokens
                    .insert(token.clone(), (uuid.to_string(), Instant::now() + lifetime));
                self.issued_tokens.push(token.clone());
                Answer::ok(json!({"token": token, "effectiveTime": lifetime.as_millis() as i64}))
            }
            _ => Answer::err(401, "认证失败"),
        }
    }

    pub fn images(&self) -> Answer {
        Answer::ok(serde_json::to_value(&self.images).unwrap_or_default())
    }

    pub fn packages(&self, package_type: &str) -> Answer {
        let wanted = match package_type {
            "0" => ["0", "2"],
            "1" => ["1", "2"],
            _ => return Answer::err(1003, "主机配置类型错误"),
        };
        // Prices are documented as strings, but the provider's example sends numbers.
        let as_text = self.freedom.prices_as_text;
        let list: Vec<Value> = self
            .packages
            .iter()
            .filter(|p| p.use_type.as_deref().is_some_and(|u| wanted.contains(&u)))
            .map(|p| {
                let mut v = serde_json::to_value(p).unwrap_or_default();
                for key in ["amount", "discount"] {
                    let number = v[key].as_str().and_then(|a| a.parse::<f64>().ok());
                    if let Some(n) = number.filter(|_| !as_text) {
                        v[key] = json!(n);
                    }
                }
                v
            })
            .collect();
        Answer::ok(Value::Array(list))
    }

    pub fn create_rent(&mut self, account: &str, body: &Value) -> Answer {
        let Ok(request) = serde_json::from_value::<CreateRent>(body.clone()) else {
            return Answer::err(1007, "缺少必要参数");
        };
        self.create_requests.push(request.clone());
        let Some(hours) = period_hours(request.period_type).filter(|_| request.period_number >= 1)
        else {
            return Answer::err(1003, "购买周期错误");
        };
        let acct = self
            .accounts
            .get(account)
            .cloned()
            .expect("authenticated accounts exist");
        if !acct.real_name_verified {
            return Answer::err(1037, "未进行实名认证");
        }
        let Some(package) = self
            .packages
            .iter()
            .find(|p| {
                p.package_id.as_deref() == Some(request.package_id.as_str())
                    && p.use_type.as_deref() != Some("0")
            })
            .cloned()
        else {
            return Answer::err(1003, "主机配置不存在");
        };
        let Some(image) = self
            .images
            .iter()
            .find(|i| i.image_id.as_deref() == Some(request.image_id.as_str()))
            .cloned()
        else {
            return Answer::err(1003, "镜像不存在");
        };
        if package.type_ != image.type_ {
            return Answer::err(7005, "主机配置类型与镜像类型不一致");
        }
        if self.create_waits > 0 {
            self.create_waits -= 1;
            return Answer::err(6005, "创建等待");
        }
        if self.capacity.get(&request.package_id) == Some(&0) {
            return Answer::err(6002, "资源不足, 请重新选择配置");
        }
        if acct.wallet_error {
            return Answer::err(9000, "钱包异常");
        }
        let number = |v: &Option<String>| v.as_deref().and_then(|a| a.parse::<f64>().ok());
        let price = number(&package.amount).unwrap_or(0.0)
            * number(&package.discount).unwrap_or(1.0)
            * hours
            * f64::from(request.period_number);
        if acct.balance < price {
            return Answer::err(9001, "钱包余额不足");
        }
        if let Some(left) = self.capacity.get_mut(&request.package_id) {
            *left -= 1;
        }
        if let Some(a) = self.accounts.get_mut(account) {
            a.balance -= price;
        }
        let new = NewHost {
            package: &package,
            image: &image,
            period_number: request.period_number,
            period_type: request.period_type,
            created: now_ms(),
        };
        let id = self.add_host(account, new);
        self.rented.push((id.clone(), request.package_id.clone()));
        Answer::ok(Value::String(id))
    }

    /// Puts a new host on the account; returns its id.
    pub fn add_host(&mut self, account: &str, new: NewHost<'_>) -> String {
        let NewHost {
            package,
            image,
            period_number,
            period_type,
            created,
        } = new;
        let hours = period_hours(period_type).unwrap_or(1.0);
        let mut id = random_letters(10);
        while self.hosts.contains_key(&id) {
            id = random_letters(10);
        }
        let expires = created + (hours * f64::from(period_number) * 3_600_000.0) as i64;
        let password = random_letters(16);
        self.issued_passwords.push(password.clone());
        let host = Host {
            id: Some(id.clone()),
            name: package.name.clone(),
            gpu_configuration: package.gpu_name.clone(),
            gpu_number: package.gpu_number,
            memory: package.memory_number,
            cpu: package.cpu_number,
            rigid_disk: package.rigid_disk_number,
            operating_system: image.system_image_name.clone(),
            host_account: Some("administrator".into()),
            host_pw: Some(password),
            address: Some("gx-xds-rdp.example".into()),
            port: Some(rand::random_range(20_000..60_000)),
            pve_machine_type: package.pve_machine_type.clone(),
            create_time: Some(created),
            expiration_time: Some(expires),
            mac: None,
            ipv4: None,
            use_type: Some("1".into()),
            status: None,
            area: package.area.clone(),
        };
        let mut sim_host = SimHost {
            host,
            owner: account.to_string(),
            package_id: package.package_id.clone().unwrap_or_default(),
            status: HostStatus::Starting,
            settles_to: None,
        };
        sim_host.transition(
            HostStatus::Starting,
            HostStatus::Running,
            self.timing.start_delay,
        );
        self.hosts.insert(id.clone(), sim_host);
        self.listing_order.clear();
        id
    }

    /// Puts `n` hosts on the account as if rented before the operator started: of every
    /// rental package (the first one included), created between one and thirty days ago.
    pub fn preload_hosts(&mut self, account: &str, n: usize) -> Vec<String> {
        let rentals: Vec<Package> = self
            .packages
            .iter()
            .filter(|p| p.use_type.as_deref() != Some("0"))
            .cloned()
            .collect();
        let now = now_ms();
        (0..n)
            .map(|i| {
                let package = rentals[i % rentals.len()].clone();
                let image = self
                    .images
                    .iter()
                    .find(|im| im.type_ == package.type_)
                    .cloned()
                    .unwrap_or_default();
                let age = (1 + (i as i64 * 7919) % 30) * 86_400_000 + i as i64 * 1000;
                let new = NewHost {
                    package: &package,
                    image: &image,
                    period_number: 1,
                    period_type: 3,
                    created: now - age,
                };
                let id = self.add_host(account, new);
                if let Some(h) = self.hosts.get_mut(&id) {
                    h.set_status(HostStatus::Running);
                }
                id
            })
            .collect()
    }

    fn owned_host(&mut self, account: &str, id: &str) -> Option<&mut SimHost> {
        self.settle_hosts();
        self.hosts.get_mut(id).filter(|h| h.owner == account)
    }

    pub fn one(&mut self, account: &str, id: &str) -> Answer {
        match self.owned_host(account, id) {
            Some(h) => Answer::ok(serde_json::to_value(&h.host).unwrap_or_default()),
            None => {
                let code = self.freedom.unknown_host_code;
                Answer::err(code, "主机不存在")
            }
        }
    }

    pub fn my_page(
        &mut self,
        account: &str,
        page: Option<&str>,
        page_size: Option<&str>,
    ) -> Answer {
        let page: usize = page
            .and_then(|p| p.parse().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(1);
        let size: usize = page_size
            .and_then(|p| p.parse().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(10)
            .min(25);
        if page == 1 {
            self.listings += 1;
        }
        self.settle_hosts();
        let order = self.freedom.order;
        let key = (account.to_string(), order);
        if !self.listing_order.contains_key(&key) {
            let mut mine: Vec<&SimHost> =
                self.hosts.values().filter(|h| h.owner == account).collect();
            fn id(h: &SimHost) -> &str {
                h.host.id.as_deref().unwrap_or_default()
            }
            match order {
                HostOrder::NewestFirst => mine.sort_unstable_by(|a, b| {
                    (b.host.create_time, id(a)).cmp(&(a.host.create_time, id(b)))
                }),
                HostOrder::OldestFirst => mine.sort_unstable_by(|a, b| {
                    (a.host.create_time, id(a)).cmp(&(b.host.create_time, id(b)))
                }),
                HostOrder::Unrelated => mine.sort_by_cached_key(|h| id_hash(id(h))),
            }
            let ids = mine.iter().map(|h| id(h).to_string()).collect();
            self.listing_order.insert(key.clone(), ids);
        }
        let ids = &self.listing_order[&key];
        let total = ids.len();
        let per_item = matches!(
            self.freedom.totals,
            TotalCounts::PerItemString | TotalCounts::Both
        );
        let items: Vec<Value> = ids
            .iter()
            .skip((page - 1) * size)
            .take(size)
            .filter_map(|id| self.hosts.get(id))
            .map(|h| {
                let mut item = serde_json::to_value(&h.host).unwrap_or_default();
                if per_item {
                    item["totalCounts"] = Value::String(total.to_string());
                }
                item
            })
            .collect();
        let mut data = json!({ "data": items });
        if matches!(
            self.freedom.totals,
            TotalCounts::PageLevel | TotalCounts::Both
        ) {
            data["totalCounts"] = json!(total);
        }
        Answer::ok(data)
    }

    pub fn operate(&mut self, account: &str, id: &str, op: Option<&str>) -> Answer {
        let (start_delay, stop_delay) = (self.timing.start_delay, self.timing.stop_delay);
        let balance = self.accounts.get(account).map_or(0.0, |a| a.balance);
        let real_name = self
            .accounts
            .get(account)
            .is_some_and(|a| a.real_name_verified);
        let Some(host) = self.owned_host(account, id) else {
            return Answer::err(1003, "主机不存在");
        };
        if !real_name {
            return Answer::err(1037, "未进行实名认证");
        }
        match (op, host.status()) {
            (Some("0") | Some("1"), HostStatus::Starting) => {
                Answer::err(6000, "主机开机中，请稍候")
            }
            (Some("0") | Some("1"), HostStatus::Stopping) => {
                Answer::err(6001, "主机关机中，请稍候")
            }
            (Some(_), HostStatus::Expired) => Answer::err(1003, "主机已到期"),
            (Some("0"), HostStatus::Running | HostStatus::Billing) => {
                host.transition(HostStatus::Stopping, HostStatus::Stopped, stop_delay);
                Answer::ok(Value::Bool(true))
            }
            (Some("0"), HostStatus::Stopped) => Answer::ok(Value::Bool(true)),
            (Some("1"), HostStatus::Stopped) if balance <= 0.0 => Answer::err(6003, "余额不足"),
            (Some("1"), HostStatus::Stopped) => {
                host.transition(HostStatus::Starting, HostStatus::Running, start_delay);
                Answer::ok(Value::Bool(true))
            }
            (Some("1"), HostStatus::Running | HostStatus::Billing) => Answer::ok(Value::Bool(true)),
            _ => Answer::err(1007, "缺少必要参数"),
        }
    }

    pub fn reboot(&mut self, account: &str, id: &str) -> Answer {
        let start_delay = self.timing.start_delay;
        let Some(host) = self.owned_host(account, id) else {
            return Answer::err(1003, "主机不存在");
        };
        match host.status() {
            HostStatus::Running => {
                host.transition(HostStatus::Starting, HostStatus::Running, start_delay);
                Answer::ok(Value::Bool(true))
            }
            HostStatus::Stopped => Answer::err(7002, "主机未开机，无法重启"),
            HostStatus::Expired => Answer::err(7003, "主机不可用，请稍后重试"),
            _ => Answer::err(7004, "主机非运行状态，无法重启"),
        }
    }

    pub fn delete(&mut self, account: &str, id: &str) -> Answer {
        if self.owned_host(account, id).is_none() {
            let code = match self.freedom.delete_unknown {
                DeleteUnknown::ErrorCode => 1003,
                DeleteUnknown::FalseData => 0,
            };
            return Answer {
                code,
                msg: "主机不存在",
                data: Value::Bool(false),
            };
        }
        self.remove_host(id);
        Answer::ok(Value::Bool(true))
    }
}
