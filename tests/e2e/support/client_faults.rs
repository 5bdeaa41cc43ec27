//! A stale cache, made for real: a layer in the controller's Kubernetes client that hands
//! on every watch event only `lag` after the API server sent it, so the controller's
//! reflector (and every decision taken on it) runs that far behind the API server.

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, BodyStream, StreamBody, combinators::UnsyncBoxBody};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type LaggedBody = UnsyncBoxBody<Bytes, BoxError>;

#[derive(Clone)]
pub struct LaggingWatches<S> {
    pub inner: S,
    pub lag: Duration,
}

impl<S, B> tower::Service<Request<kube::client::Body>> for LaggingWatches<S>
where
    S: tower::Service<Request<kube::client::Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<LaggedBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let watch = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let lag = self.lag;
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| {
                if watch {
                    lagged(body, lag)
                } else {
                    body.map_err(Into::into).boxed_unsync()
                }
            }))
        })
    }
}

/// The body's frames, each released `lag` after it arrived (a constant lag, not a growing one).
fn lagged<B>(body: B, lag: Duration) -> LaggedBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut frames = std::pin::pin!(BodyStream::new(body));
        while let Some(frame) = frames.next().await {
            if tx
                .send((Instant::now(), frame.map_err(Into::into)))
                .is_err()
            {
                break;
            }
        }
    });
    let frames = futures::stream::unfold(rx, move |mut rx| async move {
        let (arrived, frame) = rx.recv().await?;
        tokio::time::sleep_until(arrived + lag).await;
        Some((frame, rx))
    });
    StreamBody::new(frames).boxed_unsync()
}

/// Requests whose path contains `path` never get an answer while `stalled` is set: an API
/// server that hangs (kube's client has no read timeout of its own).
#[derive(Clone)]
pub struct Stalling<S> {
    pub inner: S,
    pub path: &'static str,
    pub stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<S> tower::Service<Request<kube::client::Body>> for Stalling<S>
where
    S: tower::Service<Request<kube::client::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let stall = self.stalled.load(std::sync::atomic::Ordering::SeqCst)
            && request.uri().path().contains(self.path);
        let answer = self.inner.call(request);
        Box::pin(async move {
            if stall {
                std::future::pending::<()>().await;
            }
            answer.await
        })
    }
}
