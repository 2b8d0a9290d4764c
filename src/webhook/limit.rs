//! Failed deliveries per source address: past a limit, a source is answered 429 before any work.
//!
//! A flood of unauthenticated or malformed requests then costs a map lookup each
//! (no body read, no JSON, no HMAC). Authentic deliveries from other addresses are
//! never affected; one from a limited address is, until its window passes. An
//! authentic delivery clears its source's count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a source may make per window before it is limited.
pub const MAX_FAILURES: u32 = 50;
/// How long failures are remembered (from a source's first failure in the window).
pub const WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at most; past it, expired entries go, and if none expired, all do.
const MAX_SOURCES: usize = 10_000;

/// The per-source failure counts.
#[derive(Debug)]
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    sources: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter::new(MAX_FAILURES, WINDOW)
    }
}

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            max,
            window,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `source` may be heard now (false: it failed too often in this window).
    pub fn allows(&self, source: IpAddr, now: Instant) -> bool {
        let Ok(sources) = self.sources.lock() else {
            return true;
        };
        match sources.get(&source) {
            Some((since, count)) => *count < self.max || now.duration_since(*since) >= self.window,
            None => true,
        }
    }

    /// `source` sent a delivery that was refused (400, 401, 413).
    pub fn failed(&self, source: IpAddr, now: Instant) {
        let Ok(mut sources) = self.sources.lock() else {
            return;
        };
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            let window = self.window;
            sources.retain(|_, (since, _)| now.duration_since(*since) < window);
            if sources.len() >= MAX_SOURCES {
                sources.clear();
            }
        }
        let entry = sources.entry(source).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// `source` sent an authentic delivery: its failures are forgiven.
    pub fn succeeded(&self, source: IpAddr) {
        if let Ok(mut sources) = self.sources.lock() {
            sources.remove(&source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_limited_after_max_failures_until_the_window_passes() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(10));
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.allows(a, t0));
            limiter.failed(a, t0);
        }
        assert!(!limiter.allows(a, t0), "limited after 3 failures");
        assert!(limiter.allows(b, t0), "another source is not");
        assert!(
            limiter.allows(a, t0 + Duration::from_secs(10)),
            "window over"
        );
        limiter.failed(a, t0 + Duration::from_secs(10));
        assert!(
            limiter.allows(a, t0 + Duration::from_secs(10)),
            "a new window starts counting from one"
        );
    }

    #[test]
    fn an_authentic_delivery_forgives_its_source() {
        let limiter = FailureLimiter::new(1, Duration::from_secs(10));
        let a: IpAddr = [10, 0, 0, 1].into();
        let now = Instant::now();
        limiter.failed(a, now);
        assert!(!limiter.allows(a, now));
        limiter.succeeded(a);
        assert!(limiter.allows(a, now));
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = FailureLimiter::new(1, Duration::from_secs(10));
        let now = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 5) {
            limiter.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        let len = limiter.sources.lock().map(|s| s.len()).unwrap_or(0);
        assert!(len <= MAX_SOURCES, "{len}");
    }
}
