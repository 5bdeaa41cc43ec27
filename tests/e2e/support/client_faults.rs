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

/// Requests of one method to paths containing a text, held back while armed until opened:
/// a decision caught between its read and its writes.
#[derive(Default)]
pub struct Hold {
    armed: std::sync::atomic::AtomicBool,
    held: std::sync::atomic::AtomicUsize,
    opened: tokio::sync::Notify,
}

impl Hold {
    /// From now on, matching requests wait for [`Hold::open`].
    pub fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Requests held so far.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets every held request go on, and holds no more.
    pub fn open(&self) {
        self.armed.store(false, std::sync::atomic::Ordering::SeqCst);
        self.opened.notify_waiters();
    }
}

/// The service of a [`Hold`]: the inner service is shared (kube's is not `Clone`), so that a
/// held request is sent, ready, only once the hold opens.
pub struct Holding<S> {
    pub inner: std::sync::Arc<tokio::sync::Mutex<S>>,
    pub method: http::Method,
    pub path: &'static str,
    pub hold: std::sync::Arc<Hold>,
}

impl<S> tower::Service<Request<kube::client::Body>> for Holding<S>
where
    S: tower::Service<Request<kube::client::Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        use std::sync::atomic::Ordering::SeqCst;
        use tower::ServiceExt;
        let matches = *request.method() == self.method && request.uri().path().contains(self.path);
        let (hold, inner) = (self.hold.clone(), self.inner.clone());
        Box::pin(async move {
            if matches && hold.armed.load(SeqCst) {
                let opened = hold.opened.notified();
                hold.held.fetch_add(1, SeqCst);
                if hold.armed.load(SeqCst) {
                    opened.await;
                }
            }
            let answer = {
                let mut service = inner.lock().await;
                service.ready().await?.call(request)
            };
            answer.await
        })
    }
}
