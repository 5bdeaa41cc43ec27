//! Per-account outgoing rate limit (token bucket) with bounded concurrency.

use std::time::Duration;
use tokio::sync::{Mutex, Semaphore, SemaphorePermit};
use tokio::time::Instant;

pub struct RateLimiter {
    bucket: Mutex<Bucket>,
    per_second: f64,
    burst: f64,
    in_flight: Semaphore,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32, concurrency: usize) -> RateLimiter {
        RateLimiter {
            bucket: Mutex::new(Bucket {
                tokens: f64::from(burst),
                at: Instant::now(),
            }),
            per_second: per_second.max(0.001),
            burst: f64::from(burst.max(1)),
            in_flight: Semaphore::new(concurrency.max(1)),
        }
    }

    /// Whether a request now would leave half the burst to spare: an optional call is made
    /// only then, so that it never delays one that is needed by more than its turn in the
    /// calls in flight.
    pub async fn has_headroom(&self) -> bool {
        let mut bucket = self.bucket.lock().await;
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        bucket.tokens >= (self.burst / 2.0).max(1.0)
    }

    /// Waits for a request slot; the permit bounds concurrency until dropped.
    pub async fn acquire(&self) -> SemaphorePermit<'_> {
        loop {
            let wait = {
                let mut bucket = self.bucket.lock().await;
                let now = Instant::now();
                let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
                bucket.tokens = (bucket.tokens + refill).min(self.burst);
                bucket.at = now;
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    break;
                }
                Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
        self.in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed")
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
            drop(limiter.acquire().await);
        }
        // 10 at once, then 10 more at 5/s.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1900) && elapsed <= Duration::from_millis(2100),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn headroom_is_half_the_burst() {
        let limiter = RateLimiter::new(5.0, 10, 4);
        assert!(limiter.has_headroom().await);
        for _ in 0..6 {
            drop(limiter.acquire().await);
        }
        assert!(!limiter.has_headroom().await, "4 tokens left of 10");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(limiter.has_headroom().await, "5 tokens after 200 ms at 5/s");
    }
}
