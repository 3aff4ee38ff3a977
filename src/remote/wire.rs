//! The WebSocket protocol's frames (`docs/protocol.md` has every frame's exact JSON). Text
//! frames, one JSON object each.

use serde::{Deserialize, Serialize};

use crate::protocol::{Command, Event, Snapshot};

/// The daemon's frames.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First, and after every (re)connection: where the engine stands.
    Hello { version: String, snapshot: Box<Snapshot> },
    /// Every event after the hello's snapshot, gap-free.
    Event { seq: u64, event: Event },
    /// The answer to a client's command.
    Ack {
        id: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// An event frame, serialised without copying the event.
#[derive(Serialize)]
pub struct EventFrameRef<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub seq: u64,
    pub event: &'a Event,
}

impl<'a> EventFrameRef<'a> {
    pub fn new(seq: u64, event: &'a Event) -> Self {
        Self { kind: "event", seq, event }
    }
}

/// The client's frames.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Command { id: String, command: Command },
}

impl ServerFrame {
    pub fn ack(id: String, answer: Result<String, String>) -> Self {
        match answer {
            Ok(message) => ServerFrame::Ack { id, ok: true, message: Some(message), error: None },
            Err(error) => ServerFrame::Ack { id, ok: false, message: None, error: Some(error) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_documented_shape() {
        let command: ClientFrame =
            serde_json::from_str(r#"{"type":"command","id":"7","command":{"command":"stop_model","model":"qwen-7b"}}"#)
                .expect("parses");
        let ClientFrame::Command { id, command } = command;
        assert_eq!((id.as_str(), command), ("7", Command::StopModel { model: "qwen-7b".into() }));
        let ok = serde_json::to_string(&ServerFrame::ack("7".into(), Ok("stopping".into()))).expect("json");
        assert_eq!(ok, r#"{"type":"ack","id":"7","ok":true,"message":"stopping"}"#);
        let err = serde_json::to_string(&ServerFrame::ack("8".into(), Err("no".into()))).expect("json");
        assert_eq!(err, r#"{"type":"ack","id":"8","ok":false,"error":"no"}"#);
    }
}
