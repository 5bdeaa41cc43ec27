//! One token cache per credential: reused until 80 % of its lifetime, refreshed once after a
//! 401, and concurrent refreshes collapsed into one getToken call.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// A cached token; `Debug` hides the value.
#[derive(Clone)]
pub struct Token {
    pub(crate) value: String,
    /// `None` when the provider gave no lifetime: used until a 401 says otherwise.
    refresh_after: Option<Instant>,
    generation: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Token {
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[derive(Default)]
pub struct TokenCache {
    current: Mutex<Option<Token>>,
    refresh: tokio::sync::Mutex<()>,
    /// Generations only grow, so a rejection of an old token never drops a newer one.
    generations: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    fn fresh(&self) -> Option<Token> {
        let current = self.current.lock();
        current
            .as_ref()
            .filter(|t| t.refresh_after.is_none_or(|at| Instant::now() < at))
            .cloned()
    }

    /// The current token, fetching one with `fetch` when there is none or it is due for
    /// renewal. Concurrent callers share one fetch.
    pub async fn get<F, Fut, E>(&self, fetch: F) -> Result<Token, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), E>>,
    {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _refreshing = self.refresh.lock().await;
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let (value, lifetime) = fetch().await?;
        let mut current = self.current.lock();
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let token = Token {
            value,
            refresh_after: (!lifetime.is_zero()).then(|| Instant::now() + lifetime.mul_f64(0.8)),
            generation,
        };
        *current = Some(token.clone());
        Ok(token)
    }

    /// Marks the token of `generation` as rejected, unless a newer one replaced it already.
    pub fn reject(&self, generation: u64) {
        let mut current = self.current.lock();
        if current.as_ref().is_some_and(|t| t.generation == generation) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn concurrent_refreshes_make_one_call() {
        let cache = Arc::new(TokenCache::default());
        let calls = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(("t1".to_string(), Duration::from_secs(60)))
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().value, "t1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_token_without_a_lifetime_is_used_until_rejected() {
        let cache = TokenCache::default();
        let calls = AtomicU32::new(0);
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(("t".to_string(), Duration::ZERO))
        };
        let first = cache.get(fetch).await.unwrap();
        for _ in 0..5 {
            cache.get(fetch).await.unwrap();
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "not fetched before every call"
        );
        cache.reject(first.generation());
        cache.get(fetch).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "refreshed after a 401");
    }

    #[tokio::test]
    async fn a_rejected_token_is_refetched_once_and_stale_rejections_are_ignored() {
        let cache = TokenCache::default();
        let fetch = |v: &'static str| {
            move || async move { Ok::<_, ()>((v.to_string(), Duration::from_secs(60))) }
        };
        let first = cache.get(fetch("a")).await.unwrap();
        cache.reject(first.generation());
        let second = cache.get(fetch("b")).await.unwrap();
        assert_eq!(second.value, "b");
        cache.reject(first.generation());
        assert_eq!(cache.get(fetch("c")).await.unwrap().value, "b");
    }

    #[tokio::test]
    async fn tokens_are_renewed_at_80_percent_of_their_lifetime() {
        let cache = TokenCache::default();
        let fetch = |v: &'static str| {
            move || async move { Ok::<_, ()>((v.to_string(), Duration::from_millis(500))) }
        };
        cache.get(fetch("a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(cache.get(fetch("b")).await.unwrap().value, "a");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(cache.get(fetch("c")).await.unwrap().value, "c");
    }
}
