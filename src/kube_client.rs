//! The Kubernetes client the controller runs on: a read timeout, and every request counted
//! by verb and resource (`rentedhost_kubernetes_requests_total`), so that what the
//! controller costs the API server is measured where it is spent.

use crate::metrics::Metrics;
use kube::client::{Body, ClientBuilder};
use std::sync::Arc;
use std::time::Duration;
use tower::util::MapRequestLayer;

/// The client of the kubeconfig or service account in effect. kube sets no read timeout,
/// and a call that never answers would hold a reconcile (or a lease renewal) forever; the
/// watches are long polls that the API server ends well within it (kube-rs asks for 290 s).
pub async fn infer(metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    let mut config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    config.read_timeout = Some(Duration::from_secs(300));
    counted(config, metrics)
}

/// A client for `config` whose requests are counted in `metrics`.
pub fn counted(config: kube::Config, metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    let count = MapRequestLayer::new(move |request: http::Request<Body>| {
        metrics.kubernetes_request(verb(&request), resource(request.uri().path()));
        request
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&count).build())
}

/// The path's segments after the API group and version, and after `namespaces/{ns}` when
/// the request is namespaced: `[resource]`, `[resource, name]` or `[resource, name, sub]`.
fn resource_segments(path: &str) -> Vec<&str> {
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let skip = match segments.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return Vec::new(),
    };
    segments.drain(..skip.min(segments.len()));
    // `namespaces/{ns}/{resource}…` is namespaced; `namespaces/{ns}` alone is a Namespace.
    if segments.first() == Some(&"namespaces") && segments.len() > 2 {
        segments.drain(..2);
    }
    segments
}

/// The verb the API server would count: a GET is a watch, a list or a get; a PATCH of
/// content type apply-patch is an apply.
fn verb(request: &http::Request<Body>) -> &'static str {
    let query = request.uri().query().unwrap_or_default();
    let named = resource_segments(request.uri().path()).len() > 1;
    match *request.method() {
        http::Method::GET if query.split('&').any(|p| p == "watch=true") => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::DELETE => "delete",
        http::Method::PATCH => {
            let content_type = request.headers().get(http::header::CONTENT_TYPE);
            match content_type.and_then(|v| v.to_str().ok()) {
                Some(t) if t.starts_with("application/apply-patch") => "apply",
                _ => "patch",
            }
        }
        _ => "other",
    }
}

/// The resource a path names, among those the controller uses (a bounded label).
fn resource(path: &str) -> &'static str {
    let segments = resource_segments(path);
    match (segments.first().copied(), segments.get(2).copied()) {
        (Some("rentedhosts"), Some("status")) => "rentedhosts/status",
        (Some("rentedhosts"), _) => "rentedhosts",
        (Some("rentedhostpools"), Some("status")) => "rentedhostpools/status",
        (Some("rentedhostpools"), _) => "rentedhostpools",
        (Some("rentedhostbudgets"), Some("status")) => "rentedhostbudgets/status",
        (Some("rentedhostbudgets"), _) => "rentedhostbudgets",
        (Some("secrets"), _) => "secrets",
        (Some("events"), _) => "events",
        (Some("leases"), _) => "leases",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, content_type: Option<&str>) -> http::Request<Body> {
        let mut builder = http::Request::builder().method(method).uri(uri);
        if let Some(t) = content_type {
            builder = builder.header(http::header::CONTENT_TYPE, t);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn requests_are_named_as_the_api_server_counts_them() {
        let rh = "/apis/xuandashi.dev/v1alpha1/namespaces/ns/rentedhosts";
        let cases = [
            (
                "GET",
                format!("{rh}?watch=true&resourceVersion=5"),
                None,
                "watch",
                "rentedhosts",
            ),
            ("GET", rh.to_string(), None, "list", "rentedhosts"),
            (
                "GET",
                "/apis/xuandashi.dev/v1alpha1/rentedhosts".into(),
                None,
                "list",
                "rentedhosts",
            ),
            ("GET", format!("{rh}/a"), None, "get", "rentedhosts"),
            (
                "PATCH",
                format!("{rh}/a"),
                Some("application/merge-patch+json"),
                "patch",
                "rentedhosts",
            ),
            (
                "PATCH",
                format!("{rh}/a/status"),
                Some("application/apply-patch+yaml"),
                "apply",
                "rentedhosts/status",
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/ns/events".into(),
                None,
                "create",
                "events",
            ),
            (
                "GET",
                "/api/v1/namespaces/ns/secrets/creds".into(),
                None,
                "get",
                "secrets",
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l".into(),
                None,
                "update",
                "leases",
            ),
            (
                "PATCH",
                "/apis/xuandashi.dev/v1alpha1/namespaces/ns/rentedhostbudgets/b/status".into(),
                Some("application/merge-patch+json"),
                "patch",
                "rentedhostbudgets/status",
            ),
            (
                "GET",
                "/apis/xuandashi.dev/v1alpha1/namespaces/ns/rentedhostbudgets".into(),
                None,
                "list",
                "rentedhostbudgets",
            ),
            (
                "PATCH",
                "/apis/xuandashi.dev/v1alpha1/namespaces/ns/rentedhostpools/p/status".into(),
                Some("application/apply-patch+yaml"),
                "apply",
                "rentedhostpools/status",
            ),
            ("GET", "/api/v1/namespaces/ns".into(), None, "get", "other"),
            ("GET", "/version".into(), None, "list", "other"),
        ];
        for (method, uri, content_type, verb_, resource_) in cases {
            let r = request(method, &uri, content_type);
            assert_eq!(
                (verb(&r), resource(r.uri().path())),
                (verb_, resource_),
                "{method} {uri}"
            );
        }
    }
}
