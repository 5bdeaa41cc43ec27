//! Where an object's provider credentials come from: its `credentialsSecretRef`, or the
//! operator's default Secret.

use crate::api::RentedHost;
use crate::provider::Credentials;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use std::collections::HashMap;

/// A Secret (namespace/name) holding credentials under two keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
    pub uuid_key: String,
    pub secret_key: String,
}

impl SecretRef {
    pub fn new(namespace: &str, name: &str) -> SecretRef {
        SecretRef {
            namespace: namespace.into(),
            name: name.into(),
            uuid_key: "uuid".into(),
            secret_key: "secret".into(),
        }
    }

    pub fn is(&self, namespace: &str, name: &str) -> bool {
        self.namespace == namespace && self.name == name
    }
}

/// The operator's own namespace and its default credentials Secret (flags of `run`).
#[derive(Debug, Clone, clap::Args)]
pub struct Home {
    /// The operator's own namespace: its default credentials Secret and its Lease live here.
    #[arg(
        id = "operator_namespace",
        long = "operator-namespace",
        env = "POD_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// Secret holding the default credentials (keys `uuid` and `secret`), in the operator's
    /// namespace: used by objects without `credentialsSecretRef`.
    #[arg(long, env = "CREDENTIALS_SECRET")]
    pub credentials_secret: Option<String>,
}

impl Home {
    pub fn default_credentials(&self) -> Option<SecretRef> {
        let name = self.credentials_secret.as_deref()?;
        Some(SecretRef::new(&self.namespace, name))
    }
}

/// The Secret an object's credentials come from, if any is configured.
pub fn secret_ref(obj: &RentedHost, default: Option<&SecretRef>) -> Option<SecretRef> {
    match &obj.spec.credentials_secret_ref {
        Some(r) => Some(SecretRef {
            namespace: obj.namespace().unwrap_or_default(),
            name: r.name.clone(),
            uuid_key: r
                .uuid_key
                .clone()
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| "uuid".into()),
            secret_key: r
                .secret_key
                .clone()
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| "secret".into()),
        }),
        None => default.cloned(),
    }
}

/// Why credentials could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The Secret or a key is missing: the user must act (reason CredentialsMissing).
    #[error("{0}")]
    Missing(String),
    /// The API server did not answer the read: transient, retried as a Kubernetes error.
    #[error("credentials Secret could not be read: {0}")]
    Unreadable(#[source] kube::Error),
}

/// Reads the credentials; the error explains what is missing (never a value).
pub async fn load(client: &Client, r: &SecretRef) -> Result<Credentials, Problem> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
    let secret = match secrets.get_opt(&r.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(Problem::Missing(format!(
                "credentials Secret {}/{} not found",
                r.namespace, r.name
            )));
        }
        Err(e) => return Err(Problem::Unreadable(e)),
    };
    let value = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.trim().to_string())
            })
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Problem::Missing(format!(
                    "credentials Secret {}/{} has no key {key:?}",
                    r.namespace, r.name
                ))
            })
    };
    Ok(Credentials::new(value(&r.uuid_key)?, value(&r.secret_key)?))
}

/// Credentials read from Secrets, each read once and kept until the Secret changes.
#[derive(Default)]
pub struct Cache(Mutex<HashMap<(String, String), Credentials>>);

impl Cache {
    /// The credentials in a Secret, read once and kept until the Secret changes.
    pub async fn get(&self, client: &Client, secret: &SecretRef) -> Result<Credentials, Problem> {
        let key = (secret.namespace.clone(), secret.name.clone());
        if let Some(c) = self.0.lock().get(&key) {
            return Ok(c.clone());
        }
        let loaded = load(client, secret).await?;
        self.0.lock().insert(key, loaded.clone());
        Ok(loaded)
    }

    /// The Secret `namespace/name` changed: it is read again when next needed.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut cache = self.0.lock();
        cache.remove(&(namespace.to_string(), name.to_string()));
    }
}
