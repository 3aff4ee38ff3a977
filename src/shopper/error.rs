//! What can go wrong talking to the shopper, in variants a caller can act on; and how an
//! answer's status and body become one.

use serde::Deserialize;

/// How much of an unexpected body an error keeps.
pub const EXCERPT_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShopperError {
    /// Connection refused or 503: the service is starting (it does not listen during its
    /// start-up sweep) or shutting down. Try again later.
    #[error("the shopper is not ready: {0}")]
    NotReady(String),
    /// The offer was taken between listing and renting: pick another.
    #[error("offer {offer_id} is no longer available (stale inventory)")]
    StaleInventory { offer_id: String },
    /// The consumer already has an active session on this offer.
    #[error("the consumer already has an active session{} on this offer", .existing_session.as_ref().map(|s| format!(" ({s})")).unwrap_or_default())]
    Conflict { existing_session: Option<String>, message: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("not enough disk: {requested_gb} GB asked, at least {minimum_gb} GB needed ({recommended_gb} recommended)")]
    InsufficientDisk { requested_gb: u64, minimum_gb: u64, recommended_gb: u64 },
    #[error("provisioning failed ({error_type}{}): {message}", if *.retry_suggested { ", retry suggested" } else { "" })]
    ProvisioningFailed { error_type: String, retry_suggested: bool, message: String },
    #[error("the shopper answered HTTP {status}: {excerpt}")]
    Http { status: u16, excerpt: String },
    #[error("cannot reach the shopper: {0}")]
    Transport(String),
    #[error("the shopper's answer is not what the API promises: {excerpt}")]
    Undecodable { excerpt: String },
}

impl ShopperError {
    /// Worth asking again (reads only: writes never retry blindly).
    pub fn is_transient(&self) -> bool {
        matches!(self, ShopperError::NotReady(_) | ShopperError::Transport(_))
            || matches!(self, ShopperError::Http { status, .. } if *status >= 500)
    }
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    offer_id: Option<String>,
    #[serde(default)]
    retry_suggested: Option<bool>,
    #[serde(default)]
    requested_gb: Option<u64>,
    #[serde(default)]
    minimum_gb: Option<u64>,
    #[serde(default)]
    recommended_gb: Option<u64>,
}

/// A short, printable excerpt of a body (an HTML page, truncated JSON).
pub fn excerpt(body: &[u8]) -> String {
    let text = crate::util::clean_excerpt(&String::from_utf8_lossy(body), EXCERPT_CHARS);
    if text.is_empty() { "(empty body)".into() } else { text }
}

/// The error an answer other than 2xx means.
pub fn classify(status: u16, body: &[u8]) -> ShopperError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let Some(e) = parsed else {
        return match status {
            503 => ShopperError::NotReady(format!("HTTP 503: {}", excerpt(body))),
            404 => ShopperError::NotFound(excerpt(body)),
            _ => ShopperError::Http { status, excerpt: excerpt(body) },
        };
    };
    let text = e.error.clone().or_else(|| e.message.clone()).unwrap_or_default();
    let text = crate::util::clean_excerpt(&text, 500);
    match (status, e.error_type.as_deref()) {
        (_, Some("stale_inventory")) => {
            ShopperError::StaleInventory { offer_id: e.offer_id.unwrap_or_else(|| "unknown".into()) }
        }
        (_, Some("insufficient_disk")) => ShopperError::InsufficientDisk {
            requested_gb: e.requested_gb.unwrap_or(0),
            minimum_gb: e.minimum_gb.unwrap_or(0),
            recommended_gb: e.recommended_gb.unwrap_or(0),
        },
        (500, Some(kind)) => ShopperError::ProvisioningFailed {
            error_type: kind.to_owned(),
            retry_suggested: e.retry_suggested.unwrap_or(false),
            message: text,
        },
        (409, _) => ShopperError::Conflict { existing_session: conflicting_session(&text), message: text },
        (404, _) => ShopperError::NotFound(text),
        (503, _) => ShopperError::NotReady(text),
        _ => ShopperError::Http { status, excerpt: if text.is_empty() { excerpt(body) } else { text } },
    }
}

/// The session id inside `... already has active session <id> for offer ...`.
pub fn conflicting_session(message: &str) -> Option<String> {
    let rest = &message[message.find("active session ")? + "active session ".len()..];
    let id: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn answers_map_to_what_a_caller_can_do() {
        let stale = br#"{"error":"gone","error_type":"stale_inventory","offer_id":"vastai-1","retry_suggested":true}"#;
        assert_eq!(classify(503, stale), ShopperError::StaleInventory { offer_id: "vastai-1".into() });
        let conflict =
            br#"{"error":"consumer c already has active session 3f2a-91 for offer vastai-1","request_id":"r"}"#;
        assert!(
            matches!(classify(409, conflict), ShopperError::Conflict { existing_session: Some(id), .. } if id == "3f2a-91")
        );
        let disk = br#"{"error":"disk","error_type":"insufficient_disk","requested_gb":10,"minimum_gb":30,"recommended_gb":50}"#;
        assert_eq!(
            classify(400, disk),
            ShopperError::InsufficientDisk { requested_gb: 10, minimum_gb: 30, recommended_gb: 50 }
        );
        let failed = br#"{"error":"SSH verification timeout","error_type":"ssh_timeout","retry_suggested":true}"#;
        assert!(matches!(classify(500, failed), ShopperError::ProvisioningFailed { retry_suggested: true, .. }));
        assert!(matches!(classify(404, br#"{"error":"record not found"}"#), ShopperError::NotFound(_)));
        let html = b"<html><body><h1>502 Bad Gateway</h1></body></html>";
        assert!(
            matches!(classify(502, html), ShopperError::Http { status: 502, excerpt } if excerpt.contains("502 Bad Gateway"))
        );
        assert!(matches!(classify(503, b"<html>down</html>"), ShopperError::NotReady(_)));
    }

    proptest! {
        #[test]
        fn any_body_classifies_without_panicking(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let e = classify(status, &body);
            let shown = e.to_string();
            prop_assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        }

        #[test]
        fn conflict_ids_parse_from_any_text(text in ".{0,300}") {
            if let Some(id) = conflicting_session(&text) {
                prop_assert!(!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            }
        }
    }
}
