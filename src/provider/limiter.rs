//! Per-account outgoing rate limit (token bucket) with bounded concurrency, spent in order:
//! calls that spend or change something first, then looks at one host or the catalogue,
//! then listing pages. Pages also take at most a share of the rate and of the calls in
//! flight while anything else is asked for, so a listing of a large account never holds
//! up a create, a release or a power change by more than one call's turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// What a call is for, in the order the account's budget serves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// createRent, delete, operate, reboot, and the token they need.
    Act = 0,
    /// `one/{id}` and the catalogue.
    Look = 1,
    /// Listing pages.
    List = 2,
}

/// The share of the rate and of the calls in flight that listing pages may take while
/// other calls are made.
pub const LISTING_SHARE: f64 = 0.5;

/// How long after a call of a higher class pages count as sharing the account.
const CONTENDED_FOR: Duration = Duration::from_secs(2);

pub struct RateLimiter {
    bucket: Mutex<Buckets>,
    per_second: f64,
    burst: f64,
    in_flight: Semaphore,
    /// Of the calls in flight, those pages may hold.
    pages_in_flight: Semaphore,
    /// Calls waiting for a token, by priority.
    waiting: [AtomicUsize; 3],
    /// One waiter of each class at a time waits for a token, the others queue here in the
    /// order they came (tokio's mutex is fair): no call waits longer than the ones before it.
    turns: [Mutex<()>; 3],
}

struct Buckets {
    tokens: f64,
    /// Listing pages' own tokens (a share of the rate), spent while contended.
    page_tokens: f64,
    at: Instant,
    /// When a call of a higher class than pages last took a token.
    last_other: Option<Instant>,
    /// When a call that spends or changes something last had to wait for a token.
    last_act_waited: Option<Instant>,
}

impl Buckets {
    fn refill(&mut self, per_second: f64, burst: f64) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        let page_burst = (burst * LISTING_SHARE).max(1.0);
        self.page_tokens =
            (self.page_tokens + elapsed * per_second * LISTING_SHARE).min(page_burst);
        self.at = now;
    }
}

/// Counts a waiter of one class for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A call's turn: it holds its place among the calls in flight until dropped.
pub struct Permit<'a> {
    _in_flight: SemaphorePermit<'a>,
    _page: Option<SemaphorePermit<'a>>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32, concurrency: usize) -> RateLimiter {
        let concurrency = concurrency.max(1);
        let pages = ((concurrency as f64 * LISTING_SHARE).floor() as usize).max(1);
        RateLimiter {
            bucket: Mutex::new(Buckets {
                tokens: f64::from(burst),
                page_tokens: (f64::from(burst) * LISTING_SHARE).max(1.0),
                at: Instant::now(),
                last_other: None,
                last_act_waited: None,
            }),
            per_second: per_second.max(0.001),
            burst: f64::from(burst.max(1)),
            in_flight: Semaphore::new(concurrency),
            pages_in_flight: Semaphore::new(pages),
            waiting: Default::default(),
            turns: Default::default(),
        }
    }

    /// The rate at which listing pages are read while the account is shared with other
    /// calls (pages a second).
    pub fn listing_rate(&self) -> f64 {
        self.per_second * LISTING_SHARE
    }

    /// Whether a request now would leave half the burst to spare: an optional call is made
    /// only then, so that it never delays one that is needed by more than its turn in the
    /// calls in flight.
    pub async fn has_headroom(&self) -> bool {
        let mut bucket = self.bucket.lock().await;
        bucket.refill(self.per_second, self.burst);
        bucket.tokens >= (self.burst / 2.0).max(1.0)
    }

    /// Whether creates, releases or power changes wait for their turn now or did a moment
    /// ago: the account's whole rate goes to them, and an optional call waits for later.
    pub async fn acts_waiting(&self) -> bool {
        let bucket = self.bucket.lock().await;
        self.waiting[Priority::Act as usize].load(Ordering::SeqCst) > 0
            || bucket
                .last_act_waited
                .is_some_and(|t| t.elapsed() < CONTENDED_FOR)
    }

    /// Whether creates, releases or power changes wait for their turn at this moment.
    pub fn acts_queued(&self) -> bool {
        self.waiting[Priority::Act as usize].load(Ordering::SeqCst) > 0
    }

    /// Waits for a request slot of `priority`; the permit bounds concurrency until dropped.
    pub async fn acquire(&self, priority: Priority) -> Permit<'_> {
        let class = priority as usize;
        let waiting = Waiting::new(&self.waiting[class]);
        // Pages wait for their share of the calls in flight before they wait for a token.
        let page = match priority {
            Priority::List => Some(
                self.pages_in_flight
                    .acquire()
                    .await
                    .expect("the semaphore is never closed"),
            ),
            _ => None,
        };
        let turn = self.turns[class].lock().await;
        loop {
            let wait = {
                let mut bucket = self.bucket.lock().await;
                bucket.refill(self.per_second, self.burst);
                let ahead = self.waiting[..class]
                    .iter()
                    .any(|w| w.load(Ordering::SeqCst) > 0);
                let contended = bucket
                    .last_other
                    .is_some_and(|t| t.elapsed() < CONTENDED_FOR);
                let shared_out =
                    priority == Priority::List && contended && bucket.page_tokens < 1.0;
                if !ahead && !shared_out && bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    match priority {
                        Priority::List if contended => bucket.page_tokens -= 1.0,
                        Priority::List => {}
                        _ => bucket.last_other = Some(Instant::now()),
                    }
                    break;
                }
                if priority == Priority::Act {
                    bucket.last_act_waited = Some(Instant::now());
                }
                let needed = match shared_out {
                    true => (1.0 - bucket.page_tokens) / (self.per_second * LISTING_SHARE),
                    false => (1.0 - bucket.tokens).max(0.0) / self.per_second,
                };
                // Behind a call of a higher class: look again at that call's pace.
                Duration::from_secs_f64(needed).max(Duration::from_millis(2))
            };
            tokio::time::sleep(wait).await;
        }
        drop(turn);
        drop(waiting);
        let in_flight = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        Permit {
            _in_flight: in_flight,
            _page: page,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_steady_rate() {
        let limiter = RateLimiter::new(5.0, 10, 4);
        let start = tokio::time::Instant::now();
        for _ in 0..20 {
            drop(limiter.acquire(Priority::Act).await);
        }
        // 10 at once, then 10 more at 5/s.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1900) && elapsed <= Duration::from_millis(2100),
            "{elapsed:?}"
        );
    }

    /// Eight creates that keep asking, as eight reconciles do: each waits its turn in the
    /// order it asked, never longer than the seven before it.
    #[tokio::test(start_paused = true)]
    async fn calls_of_one_class_go_in_the_order_they_asked() {
        let limiter = std::sync::Arc::new(RateLimiter::new(5.0, 1, 8));
        drop(limiter.acquire(Priority::Act).await);
        let longest = std::sync::Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let mut callers = Vec::new();
        for _ in 0..8 {
            let (limiter, longest) = (limiter.clone(), longest.clone());
            callers.push(tokio::spawn(async move {
                for _ in 0..25 {
                    let asked = tokio::time::Instant::now();
                    drop(limiter.acquire(Priority::Act).await);
                    let waited = asked.elapsed();
                    let mut longest = longest.lock().unwrap();
                    *longest = (*longest).max(waited);
                }
            }));
        }
        for caller in callers {
            caller.await.unwrap();
        }
        let longest = *longest.lock().unwrap();
        assert!(longest <= Duration::from_millis(1700), "{longest:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn headroom_is_half_the_burst() {
        let limiter = RateLimiter::new(5.0, 10, 4);
        assert!(limiter.has_headroom().await);
        for _ in 0..6 {
            drop(limiter.acquire(Priority::Act).await);
        }
        assert!(!limiter.has_headroom().await, "4 tokens left of 10");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(limiter.has_headroom().await, "5 tokens after 200 ms at 5/s");
    }

    /// A listing of 200 pages under way, and 20 creates asked for meanwhile: each create
    /// waits for one token at most, never for the listing.
    #[tokio::test(start_paused = true)]
    async fn creates_go_before_the_pages_of_a_listing() {
        let limiter = std::sync::Arc::new(RateLimiter::new(5.0, 10, 4));
        let pages = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                for _ in 0..200 {
                    drop(limiter.acquire(Priority::List).await);
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        let start = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..20 {
            let asked = Instant::now();
            drop(limiter.acquire(Priority::Act).await);
            waits.push(asked.elapsed());
        }
        let took = start.elapsed();
        // 20 creates at 5/s: 4 s, whatever the listing does.
        assert!(took <= Duration::from_millis(4100), "{took:?}");
        assert!(
            waits.iter().all(|w| *w <= Duration::from_millis(210)),
            "{waits:?}"
        );
        pages.abort();
    }

    /// While other calls are made, pages take at most their share of the rate; alone, all.
    #[tokio::test(start_paused = true)]
    async fn pages_take_their_share_while_others_call_and_all_of_it_alone() {
        let limiter = std::sync::Arc::new(RateLimiter::new(10.0, 1, 4));
        let start = Instant::now();
        for _ in 0..50 {
            drop(limiter.acquire(Priority::List).await);
        }
        let alone = start.elapsed();
        assert!(alone <= Duration::from_millis(5000), "alone: {alone:?}");
        let others = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                loop {
                    drop(limiter.acquire(Priority::Act).await);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            }
        });
        let start = Instant::now();
        for _ in 0..20 {
            drop(limiter.acquire(Priority::List).await);
        }
        let shared = start.elapsed();
        others.abort();
        // 10 a second, of which pages may take 5 while others call.
        assert!(shared >= Duration::from_millis(3500), "shared: {shared:?}");
    }
}
