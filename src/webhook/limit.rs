//! Failed deliveries per source address: past a limit, a source is answered 429 before any work.
//!
//! A flood of unauthenticated or malformed requests then costs a map lookup each
//! (no body read, no JSON, no HMAC). Authentic deliveries from other addresses are
//! never affected; one from a limited address is, until its window passes. An
//! authentic delivery clears its source's count.
//!
//! The source is the TCP peer, or, when the peer is a trusted reverse proxy
//! (`server.trusted_proxies`), the address that proxy names in `X-Forwarded-For`
//! ([`sender`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::IpRange;

/// Who sent a request that came from `peer` with the `X-Forwarded-For` values
/// `forwarded_for` gives (in the order received; looked up only when the peer is a
/// trusted proxy, so other requests pay nothing): the peer itself unless it is a trusted
/// proxy; else, reading the forwarded addresses from the nearest hop back, the first one
/// that is not a trusted proxy. A hop that is not an address stops the walk at the last
/// trusted one (a proxy always writes a valid address; what comes before it is the
/// client's to forge).
pub fn sender<'a, I: DoubleEndedIterator<Item = &'a str>>(
    peer: IpAddr,
    forwarded_for: impl FnOnce() -> I,
    trusted: &[IpRange],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    let mut source = peer.to_canonical();
    if !is_trusted(source) {
        return source;
    }
    for hop in forwarded_for().rev().flat_map(|value| value.rsplit(',')) {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        source = ip.to_canonical();
        if !is_trusted(source) {
            break;
        }
    }
    source
}

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
    fn the_sender_is_the_peer_unless_a_trusted_proxy_names_another() {
        let trusted: Vec<IpRange> = ["10.0.0.0/8", "fd00::/8"]
            .iter()
            .map(|t| t.parse().expect("range"))
            .collect();
        let ip = |t: &str| t.parse::<IpAddr>().expect("ip");
        let proxy = ip("10.1.2.3");
        // An untrusted peer is the sender; what it forwards is ignored (it could forge it).
        assert_eq!(
            sender(ip("203.0.113.9"), || ["198.51.100.7"].into_iter(), &trusted),
            ip("203.0.113.9")
        );
        // Through a trusted proxy: the nearest untrusted hop, not the forgeable first one.
        assert_eq!(
            sender(proxy, || ["1.1.1.1, 198.51.100.7"].into_iter(), &trusted),
            ip("198.51.100.7")
        );
        // Two trusted proxies in a row, the header split over two lines.
        assert_eq!(
            sender(proxy, || ["198.51.100.7", "10.9.9.9"].into_iter(), &trusted),
            ip("198.51.100.7")
        );
        // No header, or a garbled hop: the last trusted address.
        assert_eq!(sender(proxy, std::iter::empty, &trusted), proxy);
        assert_eq!(
            sender(proxy, || ["198.51.100.7, junk"].into_iter(), &trusted),
            proxy
        );
        // IPv6, and an IPv4 peer seen as an IPv4-mapped IPv6 address.
        assert_eq!(
            sender(ip("fd00::1"), || ["2001:db8::5"].into_iter(), &trusted),
            ip("2001:db8::5")
        );
        assert_eq!(
            sender(
                ip("::ffff:10.1.2.3"),
                || ["198.51.100.7"].into_iter(),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // Nothing trusted: always the peer.
        assert_eq!(sender(proxy, || ["198.51.100.7"].into_iter(), &[]), proxy);
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
