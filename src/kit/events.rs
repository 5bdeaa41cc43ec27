//! Events published off the reconcile's path: a reconcile hands its event to a queue and
//! goes on; one task per shard of objects publishes them in order (an object always goes
//! through the same shard, so its repeats fold into one series).
//!
//! Each shard folds repeats itself, as client-go's event broadcaster does: an event that
//! says again what the same object was told within the last six minutes (same type, reason,
//! action and note) patches the first one's series instead of creating another. The cache
//! holds a hash and a name per event and forgets in arrival order, so a publish costs the
//! same with ten events in the cache or a million (kube's `Recorder` scans its whole cache
//! on every publish and keys it on the object's resourceVersion, so repeats never fold).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Shards, each a task publishing in order: events of different objects go out side by
/// side.
const SHARDS: usize = 16;
/// Events waiting per shard before a reconcile waits for room.
const QUEUE: usize = 256;
/// How long a repeat still folds into the series of the first (client-go's window).
const FOLD_WINDOW: Duration = Duration::from_secs(6 * 60);

enum Job {
    Publish(Box<Event>, Box<ObjectReference>),
    /// Answered once everything queued before it is published.
    Flush(oneshot::Sender<()>),
}

pub struct EventQueue {
    shards: Vec<mpsc::Sender<Job>>,
}

impl EventQueue {
    /// Starts the publishing tasks; they end when the queue is dropped.
    pub fn start(client: &kube::Client, reporter: &Reporter) -> EventQueue {
        EventQueue::with_shards(client, reporter, SHARDS)
    }

    /// [`EventQueue::start`] with `shards` tasks.
    pub fn with_shards(client: &kube::Client, reporter: &Reporter, shards: usize) -> EventQueue {
        let shards = (0..shards.max(1))
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
                let mut shard = Shard::new(client.clone(), reporter.clone());
                tokio::spawn(async move {
                    while let Some(job) = rx.recv().await {
                        match job {
                            Job::Publish(event, reference) => {
                                if let Err(error) = shard.publish(&event, &reference).await {
                                    let (reason, object) = (&event.reason, reference.name.as_deref());
                                    tracing::warn!(%error, reason, object, "could not publish the event");
                                }
                            }
                            Job::Flush(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                });
                tx
            })
            .collect();
        EventQueue { shards }
    }

    /// Queues `event` about `obj`.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, event: Event) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        obj.meta().uid.hash(&mut h);
        let shard = &self.shards[h.finish() as usize % self.shards.len()];
        // The task ends only with the queue: a send cannot fail while `self` lives.
        let reference = obj.object_ref(&());
        let _ = shard
            .send(Job::Publish(Box::new(event), Box::new(reference)))
            .await;
    }

    /// At shutdown: what the last reconciles said reaches the objects before the process
    /// ends, within a few seconds.
    pub async fn flush_at_shutdown(&self) {
        let flushed = tokio::time::timeout(Duration::from_secs(5), self.flush()).await;
        if flushed.is_err() {
            tracing::warn!("some events were not published before shutdown");
        }
    }

    /// Waits until every event queued so far is published (or failed to be).
    pub async fn flush(&self) {
        let mut waits = Vec::new();
        for shard in &self.shards {
            let (done, wait) = oneshot::channel();
            if shard.send(Job::Flush(done)).await.is_ok() {
                waits.push(wait);
            }
        }
        for wait in waits {
            let _ = wait.await;
        }
    }
}

/// An event published within the fold window.
struct Published {
    /// The Event object's name and namespace (a repeat patches it).
    name: String,
    namespace: String,
    /// Times it was said: 1 until a repeat makes it a series.
    count: i32,
    /// When it was last said (the window runs from there).
    last: Instant,
}

/// One shard's publisher and its fold cache.
struct Shard {
    client: kube::Client,
    reporter: Reporter,
    /// By the hash of what identifies a repeat (see [`Shard::key`]).
    published: HashMap<u64, Published>,
    /// Keys in the order they were last said: the front is the first to leave the window.
    order: VecDeque<(Instant, u64)>,
}

impl Shard {
    fn new(client: kube::Client, reporter: Reporter) -> Shard {
        Shard {
            client,
            reporter,
            published: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// What makes an event a repeat of another: the object (by uid, whatever its version),
    /// type, reason, action and note.
    fn key(event: &Event, reference: &ObjectReference) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&reference.uid, &reference.namespace, &reference.name).hash(&mut h);
        matches!(event.type_, EventType::Warning).hash(&mut h);
        (&event.reason, &event.action, &event.note).hash(&mut h);
        h.finish()
    }

    /// Forgets what left the window: amortised O(1) a publish.
    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().copied() {
            if now.duration_since(at) < FOLD_WINDOW {
                break;
            }
            self.order.pop_front();
            // A key said again since has a newer place further back.
            if self.published.get(&key).is_some_and(|p| p.last == at) {
                self.published.remove(&key);
            }
        }
        if self.published.capacity() > 64 && self.published.len() < self.published.capacity() / 4 {
            self.published.shrink_to_fit();
            self.order.shrink_to_fit();
        }
    }

    async fn publish(
        &mut self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Instant::now();
        self.expire(now);
        let key = Shard::key(event, reference);
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        match self.published.get_mut(&key) {
            Some(repeat) => {
                repeat.count += 1;
                repeat.last = now;
                let series = EventSeries {
                    count: repeat.count,
                    last_observed_time: MicroTime(Timestamp::now()),
                };
                let patch = serde_json::json!({ "series": series });
                let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &repeat.namespace);
                let patched = api
                    .patch(&repeat.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                self.order.push_back((now, key));
                match patched {
                    Ok(_) => Ok(()),
                    // Gone (expired by the API server, or deleted): say it anew.
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        self.published.remove(&key);
                        Box::pin(self.publish(event, reference)).await
                    }
                    Err(e) => Err(e),
                }
            }
            None => {
                let created = self.event(event, reference, &namespace);
                let name = created.metadata.name.clone().unwrap_or_default();
                let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
                api.create(&PostParams::default(), &created).await?;
                self.published.insert(
                    key,
                    Published {
                        name,
                        namespace,
                        count: 1,
                        last: now,
                    },
                );
                self.order.push_back((now, key));
                Ok(())
            }
        }
    }

    fn event(&self, event: &Event, reference: &ObjectReference, namespace: &str) -> K8sEvent {
        let now = Timestamp::now();
        let controller = &self.reporter.controller;
        let object = reference.name.as_deref().unwrap_or(controller);
        K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(namespace.to_string()),
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                ..Default::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            related: event.secondary.clone(),
            ..Default::default()
        }
    }
}
