//! Failures: the outcome class of a failed request and its message. The classes themselves are
//! part of the shared vocabulary (`protocol::Outcome`).

pub use crate::protocol::Outcome;

/// What ended a failed request: its class and a human message.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub outcome: Outcome,
    pub message: String,
}

impl Failure {
    pub fn new(outcome: Outcome, message: impl Into<String>) -> Self {
        Self { outcome, message: message.into() }
    }

    pub fn cancelled() -> Self {
        Self::new(Outcome::Cancelled, "cancelled")
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(Outcome::Malformed, message)
    }

    /// A failure to get a response at all (`send()` failed).
    pub fn from_send_error(err: reqwest::Error) -> Self {
        let outcome = if err.is_connect() && err.is_timeout() {
            Outcome::TimeoutConnect
        } else {
            // Refused, reset, closed before the response: all "the connection failed".
            Outcome::ConnectionError
        };
        Self::new(outcome, error_chain(&err))
    }
}

pub use crate::util::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_their_classes() {
        let table = [
            (429, Outcome::RateLimited),
            (400, Outcome::ClientError),
            (401, Outcome::ClientError),
            (404, Outcome::ClientError),
            (422, Outcome::ClientError),
            (500, Outcome::ServerError),
            (502, Outcome::ServerError),
            (503, Outcome::ServerError),
            (504, Outcome::ServerError),
            (529, Outcome::ServerError),
            (301, Outcome::Malformed),
            (101, Outcome::Malformed),
            (600, Outcome::Malformed),
        ];
        for (status, class) in table {
            assert_eq!(Outcome::of_status(status), class, "status {status}");
        }
    }

    #[test]
    fn names_are_the_serde_names() {
        for class in Outcome::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.name()));
        }
    }
}
