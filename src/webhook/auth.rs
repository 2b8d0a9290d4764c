//! Webhook authentication: GitLab's secret token and Standard Webhooks signatures.
//!
//! Both comparisons are constant-time. Nothing here logs or returns a secret.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ProjectConfig;

/// How far a `webhook-timestamp` may be from now (Standard Webhooks' tolerance).
pub const SIGNATURE_TOLERANCE_SECS: i64 = 5 * 60;

/// The headers authentication reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct AuthHeaders<'a> {
    pub gitlab_token: Option<&'a [u8]>,
    pub webhook_id: Option<&'a str>,
    pub webhook_timestamp: Option<&'a str>,
    pub webhook_signature: Option<&'a str>,
}

/// Why a delivery was not authentic (for logs and metrics; the caller answers a bare 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("X-Gitlab-Token missing")]
    TokenMissing,
    #[error("X-Gitlab-Token does not match")]
    TokenMismatch,
    #[error("webhook-id, webhook-timestamp or webhook-signature missing")]
    SignatureHeadersMissing,
    #[error("webhook-timestamp is not a unix time")]
    BadTimestamp,
    #[error("webhook-timestamp outside the 5-minute window")]
    Expired,
    #[error("no webhook-signature matches")]
    SignatureMismatch,
}

/// Checks a delivery for `project`: the signature when the project has a signing token
/// (then `X-Gitlab-Token` is not looked at), else the token.
pub fn authenticate(
    project: &ProjectConfig,
    headers: &AuthHeaders<'_>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), AuthError> {
    if let Some(signing) = &project.signing_token {
        return verify_signature(&signing.key, headers, body, now_unix);
    }
    match &project.webhook_token {
        Some(expected) => verify_token(expected.expose().as_bytes(), headers.gitlab_token),
        // Config validation guarantees one of the two; refuse rather than open up.
        None => Err(AuthError::TokenMissing),
    }
}

/// Constant-time token comparison (over digests, so the length does not leak either).
pub fn verify_token(expected: &[u8], got: Option<&[u8]>) -> Result<(), AuthError> {
    let got = got.ok_or(AuthError::TokenMissing)?;
    let a = Sha256::digest(expected);
    let b = Sha256::digest(got);
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(AuthError::TokenMismatch)
    }
}

/// Standard Webhooks: HMAC-SHA256 over `id.timestamp.body`, any `v1,` signature of the list may match.
pub fn verify_signature(
    key: &[u8],
    headers: &AuthHeaders<'_>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), AuthError> {
    let (Some(id), Some(ts), Some(sigs)) = (
        headers.webhook_id,
        headers.webhook_timestamp,
        headers.webhook_signature,
    ) else {
        return Err(AuthError::SignatureHeadersMissing);
    };
    let ts_num: i64 = ts.trim().parse().map_err(|_| AuthError::BadTimestamp)?;
    if (now_unix - ts_num).abs() > SIGNATURE_TOLERANCE_SECS {
        return Err(AuthError::Expired);
    }
    let mac = signature_mac(key, id, ts.trim(), body);
    let expected = mac.finalize().into_bytes();
    let mut matched = false;
    for sig in sigs.split_whitespace() {
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        // Check every candidate, so timing does not say which one matched.
        matched |= bool::from(expected.as_slice().ct_eq(&raw));
    }
    if matched {
        Ok(())
    } else {
        Err(AuthError::SignatureMismatch)
    }
}

fn signature_mac(key: &[u8], id: &str, ts: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Signs like GitLab does (`v1,<base64>`): for tests, fixtures and the fake GitLab.
pub fn sign(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
    let mac = signature_mac(key, id, &ts.to_string(), body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> AuthHeaders<'a> {
        AuthHeaders {
            gitlab_token: None,
            webhook_id: Some(id),
            webhook_timestamp: Some(ts),
            webhook_signature: Some(sig),
        }
    }

    #[test]
    fn signature_round_trip_and_window() {
        let now = 1_700_000_000;
        let sig = sign(KEY, "msg_1", now, b"{}");
        let ts = now.to_string();
        assert_eq!(
            verify_signature(KEY, &headers("msg_1", &ts, &sig), b"{}", now),
            Ok(())
        );
        assert_eq!(
            verify_signature(KEY, &headers("msg_1", &ts, &sig), b"{}", now + 300),
            Ok(())
        );
        assert_eq!(
            verify_signature(KEY, &headers("msg_1", &ts, &sig), b"{}", now + 301),
            Err(AuthError::Expired)
        );
        assert_eq!(
            verify_signature(KEY, &headers("msg_1", &ts, &sig), b"{} ", now),
            Err(AuthError::SignatureMismatch)
        );
        assert_eq!(
            verify_signature(KEY, &headers("msg_2", &ts, &sig), b"{}", now),
            Err(AuthError::SignatureMismatch)
        );
        let list = format!("v1,AAAA v2,zzz {sig}");
        assert_eq!(
            verify_signature(KEY, &headers("msg_1", &ts, &list), b"{}", now),
            Ok(())
        );
        assert_eq!(
            verify_signature(KEY, &headers("msg_1", "soon", &sig), b"{}", now),
            Err(AuthError::BadTimestamp)
        );
        assert_eq!(
            verify_signature(KEY, &AuthHeaders::default(), b"{}", now),
            Err(AuthError::SignatureHeadersMissing)
        );
    }

    #[test]
    fn token_comparison() {
        assert_eq!(verify_token(b"s3cret", Some(b"s3cret")), Ok(()));
        assert_eq!(
            verify_token(b"s3cret", Some(b"s3cre")),
            Err(AuthError::TokenMismatch)
        );
        assert_eq!(verify_token(b"s3cret", None), Err(AuthError::TokenMissing));
    }
}

/// Hostile input for the signature check (the proptest twin of `fuzz/fuzz_targets/signature.rs`).
#[cfg(test)]
mod hostile {
    use proptest::prelude::*;

    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: i64 = 1_700_000_000;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary headers and bodies never panic, and never pass without the key.
        #[test]
        fn arbitrary_headers_never_verify(
            id in ".{0,40}",
            ts in "[0-9]{0,12}|.{0,12}",
            sig in "(v1,[A-Za-z0-9+/=]{0,60} ?){0,4}|.{0,120}",
            body in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let headers = AuthHeaders {
                gitlab_token: None,
                webhook_id: Some(&id),
                webhook_timestamp: Some(&ts),
                webhook_signature: Some(&sig),
            };
            prop_assert!(verify_signature(KEY, &headers, &body, NOW).is_err());
        }

        /// A signed body verifies; flipping any bit of it does not; a valid signature
        /// among junk ones still verifies.
        #[test]
        fn only_the_signed_body_verifies(
            id in "msg_[a-zA-Z0-9]{1,24}",
            body in prop::collection::vec(any::<u8>(), 1..256),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
            skew in -SIGNATURE_TOLERANCE_SECS..=SIGNATURE_TOLERANCE_SECS,
            junk in prop::collection::vec("v1,[A-Za-z0-9+/]{43}=", 0..3),
        ) {
            let ts = (NOW + skew).to_string();
            let good = sign(KEY, &id, NOW + skew, &body);
            let mut list = junk.clone();
            list.push(good);
            let sig = list.join(" ");
            let headers = AuthHeaders {
                gitlab_token: None,
                webhook_id: Some(&id),
                webhook_timestamp: Some(&ts),
                webhook_signature: Some(&sig),
            };
            prop_assert_eq!(verify_signature(KEY, &headers, &body, NOW), Ok(()));
            let mut tampered = body.clone();
            tampered[flip.index(body.len())] ^= 1 << bit;
            prop_assert_eq!(
                verify_signature(KEY, &headers, &tampered, NOW),
                Err(AuthError::SignatureMismatch)
            );
            prop_assert_eq!(
                verify_signature(KEY, &headers, &body, NOW + 2 * SIGNATURE_TOLERANCE_SECS + 1),
                Err(AuthError::Expired)
            );
        }

        /// The token check accepts exactly the token.
        #[test]
        fn only_the_token_passes(expected in "[ -~]{1,40}", got in prop::collection::vec(any::<u8>(), 0..48)) {
            let result = verify_token(expected.as_bytes(), Some(&got));
            prop_assert_eq!(result.is_ok(), got == expected.as_bytes());
        }
    }
}
