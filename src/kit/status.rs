//! Status by server-side apply, written only when it changed: conditions are compared
//! without their timestamps, so an unchanged status is never written again.

use super::Error;
use crate::api::{RentedHostPoolStatus, RentedHostStatus, conditions_equal};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A status with conditions.
pub trait Conditioned: Clone + PartialEq + Serialize {
    fn conditions(&self) -> &[Condition];
    /// The status without its conditions (compared as they are).
    fn without_conditions(&self) -> Self;
}

impl Conditioned for RentedHostStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn without_conditions(&self) -> Self {
        RentedHostStatus {
            conditions: Vec::new(),
            ..self.clone()
        }
    }
}

impl Conditioned for RentedHostPoolStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn without_conditions(&self) -> Self {
        RentedHostPoolStatus {
            conditions: Vec::new(),
            ..self.clone()
        }
    }
}

/// Whether two statuses differ in more than condition timestamps.
pub fn changed<S: Conditioned>(before: Option<&S>, after: &S) -> bool {
    let Some(before) = before else { return true };
    before.without_conditions() != after.without_conditions()
        || !conditions_equal(before.conditions(), after.conditions())
}

/// Applies `status` to `obj` as field manager `manager`, forcing the fields it names.
pub async fn apply<K, S>(api: &Api<K>, obj: &K, manager: &str, status: &S) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(manager).force();
    api.patch_status(&obj.name_any(), &params, &Patch::Apply(&patch))
        .await
        .map_err(Error::from_kube)
}
