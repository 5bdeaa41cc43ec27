//! The provider's wire, as `xds-api.md` documents it and as the simulator writes it. Written
//! from the documentation, not shared with the operator's client: the client must read what
//! a provider sends, not what its own types would have sent.

use serde::{Deserialize, Serialize};

/// The header every call but getToken carries its token in.
pub const TOKEN_HEADER: &str = "Finovy-Access-Token";

/// The endpoints the simulator serves, each counted on its own.
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
    /// The last word of the endpoint's path.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A host's state, written as the documented code `"0"`…`"5"`.
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
}

/// One system image of `image`. Every documented field may be missing.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub image_id: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub system_image_name: Option<String>,
    pub system_image_version: Option<String>,
}

/// One package of `packAge/{type}`; `amount` and `discount` are decimal strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub package_id: Option<String>,
    pub name: Option<String>,
    pub gpu_number: Option<i64>,
    pub gpu_name: Option<String>,
    pub memory_number: Option<i64>,
    pub rigid_disk_number: Option<i64>,
    pub cpu_number: Option<i64>,
    pub band_width: Option<i64>,
    pub amount: Option<String>,
    pub discount: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub pve_machine_type: Option<String>,
    pub area: Option<String>,
    pub use_type: Option<String>,
}

/// One host of `one/{id}` and `mypage`; times in epoch milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    pub id: Option<String>,
    pub name: Option<String>,
    pub gpu_configuration: Option<String>,
    pub gpu_number: Option<i64>,
    pub memory: Option<i64>,
    pub cpu: Option<i64>,
    pub rigid_disk: Option<i64>,
    pub operating_system: Option<String>,
    pub host_account: Option<String>,
    pub host_pw: Option<String>,
    pub address: Option<String>,
    pub port: Option<i64>,
    pub pve_machine_type: Option<String>,
    pub create_time: Option<i64>,
    pub expiration_time: Option<i64>,
    pub mac: Option<String>,
    pub ipv4: Option<String>,
    pub use_type: Option<String>,
    pub status: Option<String>,
    pub area: Option<String>,
}

/// The body of createRent, read as the seed document defines it (all four fields required).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRent {
    pub package_id: String,
    pub image_id: String,
    pub period_number: u32,
    pub period_type: u8,
}
