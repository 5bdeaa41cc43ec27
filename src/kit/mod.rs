//! What both controllers share: the scope they watch, owner checks, status applied only
//! when it changed, the event queue and the error type with its routine retries.

mod error;
pub mod events;
pub mod status;

pub use error::Error;

use kube::api::Api;
use kube::{Client, Resource, ResourceExt};

/// `K` in the watched namespace, or in every namespace.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// `K` in the namespace of `obj`.
pub fn beside<K, O>(client: &Client, obj: &O) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    O: Resource,
{
    Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default())
}

/// The uid of the object of kind `kind` that controls `obj`, if one does.
pub fn controller_of<'a, O: Resource>(obj: &'a O, kind: &str) -> Option<&'a str> {
    obj.owner_references()
        .iter()
        .find(|o| o.kind == kind && o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Whether anything controls `obj`.
pub fn has_controller<O: Resource>(obj: &O) -> bool {
    obj.owner_references()
        .iter()
        .any(|o| o.controller == Some(true))
}

/// Whether the object with uid `uid` controls `obj`.
pub fn controlled_by<O: Resource>(obj: &O, uid: Option<&str>) -> bool {
    obj.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}
