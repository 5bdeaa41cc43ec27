//! Wire types of the Xuandashi API, decoded tolerantly: numbers may come as strings and
//! strings as numbers, any field may be null or missing, unknown fields are ignored.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Wraps the wire structs: every `Option<String>` and `Option<i64>` field decodes leniently
/// (see [`lenient_string`], [`lenient_i64`]) and reads as `None` when missing; names are
/// camelCase on the wire.
macro_rules! lenient {
    ($($item:item)*) => {$(
        #[serde_with::apply(
            Option<String> => #[serde(default, deserialize_with = "lenient_string")],
            Option<i64> => #[serde(default, deserialize_with = "lenient_i64")],
        )]
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        $item
    )*};
}

lenient! {
    /// The common response envelope. `success` is not relied on (the provider omits it).
    #[derive(Debug, Clone)]
    pub struct Envelope {
        pub code: Option<i64>,
        pub msg: Option<String>,
        #[serde(default)]
        pub data: Value,
        pub trace_id: Option<String>,
    }

    /// `data` of getToken.
    #[derive(Clone)]
    pub struct TokenData {
        pub token: Option<String>,
        /// Lifetime in milliseconds.
        pub effective_time: Option<i64>,
    }

    /// One system image.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct Image {
        pub image_id: Option<String>,
        #[serde(rename = "type")]
        pub type_: Option<String>,
        pub system_image_name: Option<String>,
        pub system_image_version: Option<String>,
    }

    /// One host configuration (package).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct Package {
        /// What `spec.packageId` names and createRent sends.
        pub package_id: Option<String>,
        pub name: Option<String>,
        pub gpu_number: Option<i64>,
        /// GPU model; null for hosts without one.
        pub gpu_name: Option<String>,
        /// GB.
        pub memory_number: Option<i64>,
        /// GB.
        pub rigid_disk_number: Option<i64>,
        pub cpu_number: Option<i64>,
        pub band_width: Option<i64>,
        /// Price per hour; a string in the documentation, a number in its example.
        pub amount: Option<String>,
        pub discount: Option<String>,
        /// Storage type (for example `ceph`); must equal the image's `type`.
        #[serde(rename = "type")]
        pub type_: Option<String>,
        /// `"0"` office, `"1"` graphics, `"2"` compute.
        pub pve_machine_type: Option<String>,
        /// `"0"` South China, `"1"` West China, `"2"` international.
        pub area: Option<String>,
        /// `"0"` pay-as-you-go only, `"1"` rental only, `"2"` both.
        pub use_type: Option<String>,
    }

    /// One host, as `one/{id}` and `mypage` return it. `host_account` and `host_pw` are the
    /// host's login secret: `Debug` hides them.
    #[derive(Clone, Default, PartialEq)]
    pub struct Host {
        /// The key of `one/{id}`, the operations and release.
        pub id: Option<String>,
        pub name: Option<String>,
        pub gpu_configuration: Option<String>,
        pub gpu_number: Option<i64>,
        pub memory: Option<i64>,
        pub cpu: Option<i64>,
        pub rigid_disk: Option<i64>,
        pub operating_system: Option<String>,
        /// Login user: a secret.
        pub host_account: Option<String>,
        /// Login password: a secret.
        pub host_pw: Option<String>,
        pub address: Option<String>,
        pub port: Option<i64>,
        pub pve_machine_type: Option<String>,
        /// Epoch milliseconds.
        pub create_time: Option<i64>,
        /// Epoch milliseconds.
        pub expiration_time: Option<i64>,
        pub mac: Option<String>,
        pub ipv4: Option<String>,
        /// `"0"` pay-as-you-go, `"1"` rental.
        pub use_type: Option<String>,
        /// See [`HostStatus`].
        pub status: Option<String>,
        pub area: Option<String>,
    }

    struct RawHostPage {
        #[serde(default, deserialize_with = "lenient_items")]
        data: Vec<Value>,
        total_counts: Option<i64>,
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("cpu", &self.cpu)
            .field("memory", &self.memory)
            .field("rigid_disk", &self.rigid_disk)
            .field("gpu_number", &self.gpu_number)
            .field("create_time", &self.create_time)
            .field("expiration_time", &self.expiration_time)
            .finish_non_exhaustive()
    }
}

/// The provider's host status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStatus {
    Stopped,
    Starting,
    Running,
    Billing,
    Stopping,
    Expired,
}

impl HostStatus {
    pub fn from_code(code: &str) -> Option<HostStatus> {
        Some(match code.trim() {
            "0" => HostStatus::Stopped,
            "1" => HostStatus::Starting,
            "2" => HostStatus::Running,
            "3" => HostStatus::Billing,
            "4" => HostStatus::Stopping,
            "5" => HostStatus::Expired,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            HostStatus::Stopped => "0",
            HostStatus::Starting => "1",
            HostStatus::Running => "2",
            HostStatus::Billing => "3",
            HostStatus::Stopping => "4",
            HostStatus::Expired => "5",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HostStatus::Stopped => "Stopped",
            HostStatus::Starting => "Starting",
            HostStatus::Running => "Running",
            HostStatus::Billing => "Billing",
            HostStatus::Stopping => "Stopping",
            HostStatus::Expired => "Expired",
        }
    }
}

/// How a host is billed (its `useType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billing {
    /// Rented for a prepaid period (`"1"`): what createRent makes.
    Prepaid,
    /// Pay-as-you-go (`"0"`): never what createRent makes.
    PayAsYouGo,
    /// A value the documentation does not give.
    Other,
}

impl Host {
    pub fn host_status(&self) -> Option<HostStatus> {
        self.status.as_deref().and_then(HostStatus::from_code)
    }

    /// How the host is billed, when the answer says.
    pub fn billing(&self) -> Option<Billing> {
        Some(match self.use_type.as_deref()?.trim() {
            "1" => Billing::Prepaid,
            "0" => Billing::PayAsYouGo,
            _ => Billing::Other,
        })
    }
}

/// `data` of mypage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "RawHostPage")]
pub struct HostPage {
    /// The hosts that could be read; malformed items are skipped.
    pub data: Vec<Host>,
    /// How many items the page carried, readable or not: a full page is not the last.
    pub items: usize,
    /// The total, page-level or from the items (a hint only).
    pub total_counts: Option<i64>,
}

impl From<RawHostPage> for HostPage {
    fn from(raw: RawHostPage) -> HostPage {
        let per_item = raw.data.iter().find_map(|item| {
            let total = item.get("totalCounts")?;
            lenient_i64(total.clone()).ok().flatten()
        });
        HostPage {
            items: raw.data.len(),
            total_counts: raw.total_counts.or(per_item),
            data: raw
                .data
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect(),
        }
    }
}

/// Body of createRent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRent {
    pub package_id: String,
    pub image_id: String,
    pub period_number: u32,
    pub period_type: u8,
}

impl CreateRent {
    /// The createRent body of a recorded request.
    pub fn of(request: &crate::api::CreateRequest) -> CreateRent {
        CreateRent {
            package_id: request.package_id.clone(),
            image_id: request.image_id.clone(),
            period_number: request.period.count,
            period_type: super::period::period_type(request.period.unit),
        }
    }
}

/// An integer given as a number, a numeric string, or null.
pub fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
        }
        _ => None,
    })
}

/// A string given as a string, a number, a boolean, or null.
pub fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// A list (null reads as empty); its items are checked one by one by the caller.
fn lenient_items<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    match Value::deserialize(d)? {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(de::Error::custom(format!(
            "expected a list, got {}",
            kind(&other)
        ))),
    }
}

/// The JSON kind of a value, for error messages that must not echo provider data.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Any JSON value, nested a few levels, with the provider's field names among the keys.
    fn any_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("data".to_string()),
            Just("code".to_string()),
            Just("msg".to_string()),
            Just("traceId".to_string()),
            Just("totalCounts".to_string()),
            Just("id".to_string()),
            Just("status".to_string()),
            Just("expirationTime".to_string()),
            Just("hostPw".to_string()),
            "[a-zA-Z]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            any::<u64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            "-?[0-9]{1,25}(\\.[0-9]{1,5})?".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                proptest::collection::btree_map(key.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Provider garbage never panics the decoding: every wire type takes any JSON (and
        /// any bytes) and answers with a value or an error.
        #[test]
        fn any_answer_decodes_or_is_refused_without_a_panic(v in any_json(), bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = serde_json::from_value::<Envelope>(v.clone());
            let _ = serde_json::from_value::<TokenData>(v.clone());
            let _ = serde_json::from_value::<Vec<Image>>(v.clone());
            let _ = serde_json::from_value::<Vec<Package>>(v.clone());
            let _ = serde_json::from_value::<Host>(v.clone());
            if let Ok(page) = serde_json::from_value::<HostPage>(v.clone()) {
                prop_assert!(page.data.len() <= page.items);
            }
            let _ = serde_json::from_slice::<Envelope>(&bytes);
            if let Ok(host) = serde_json::from_value::<Host>(v) {
                let _ = host.host_status();
                let _ = format!("{host:?}");
            }
        }
    }

    #[test]
    fn envelope_without_success_and_with_string_code() {
        let e: Envelope =
            serde_json::from_value(json!({"code": "6005", "msg": "创建等待", "traceId": 42}))
                .unwrap();
        assert_eq!(e.code, Some(6005));
        assert_eq!(e.trace_id.as_deref(), Some("42"));
        assert!(e.data.is_null());
    }

    #[test]
    fn host_numbers_as_strings_nulls_and_unknown_fields() {
        let h: Host = serde_json::from_value(json!({
            "id": "dyMFQQgHIW", "gpuNumber": null, "memory": "16", "cpu": 4, "rigidDisk": "128",
            "port": "54220", "createTime": "1764140400000", "expirationTime": null,
            "status": 2, "somethingNew": {"x": 1}
        }))
        .unwrap();
        assert_eq!(h.memory, Some(16));
        assert_eq!(h.port, Some(54220));
        assert_eq!(h.create_time, Some(1_764_140_400_000));
        assert_eq!(h.expiration_time, None);
        assert_eq!(h.host_status(), Some(HostStatus::Running));
    }

    #[test]
    fn page_accepts_total_as_string_and_skips_garbage_items() {
        let p: HostPage = serde_json::from_value(
            json!({"data": [{"id": "a"}, 7, {"id": "b"}], "totalCounts": "2"}),
        )
        .unwrap();
        assert_eq!(p.data.len(), 2);
        assert_eq!(p.items, 3, "a skipped item still counts toward a full page");
        assert_eq!(p.total_counts, Some(2));
        let per_item: HostPage =
            serde_json::from_value(json!({"data": [{"id": "a", "totalCounts": "31"}]})).unwrap();
        assert_eq!(per_item.total_counts, Some(31));
        let bare: HostPage = serde_json::from_value(json!({"data": null})).unwrap();
        assert_eq!((bare.items, bare.total_counts), (0, None));
    }

    #[test]
    fn debug_of_a_host_hides_its_login() {
        let h = Host {
            host_pw: Some("hunter2".into()),
            host_account: Some("administrator".into()),
            ..Default::default()
        };
        let shown = format!("{h:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("administrator"));
    }
}
