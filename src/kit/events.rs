//! Events published off the reconcile's path: a reconcile hands its event to a queue and
//! goes on; one task per shard of objects publishes them in order through its own recorder
//! (kube's recorder folds an object's repeats into a series, so an object always goes
//! through the same shard).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, Recorder, Reporter};
use tokio::sync::{mpsc, oneshot};

/// Shards, each a task and a recorder: kube's recorder scans its whole cache of the last
/// six minutes' events on every publish, under one write lock.
const SHARDS: usize = 64;
/// Events waiting per shard before a reconcile waits for room.
const QUEUE: usize = 256;

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
                let recorder = Recorder::new(client.clone(), reporter.clone());
                tokio::spawn(async move {
                    while let Some(job) = rx.recv().await {
                        match job {
                            Job::Publish(event, reference) => {
                                if let Err(error) = recorder.publish(&event, &reference).await {
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
        use std::hash::{Hash, Hasher};
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
        let flushed = tokio::time::timeout(std::time::Duration::from_secs(5), self.flush()).await;
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
