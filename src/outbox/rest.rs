//! REST delivery of commands (blueprint §5): a fallback for when the event bus
//! is unavailable, or the primary transport where participants have no Kafka.
//! Still from the outbox, still at-least-once: each request carries the
//! command id as `Idempotency-Key` so the participant can de-duplicate.

// Message kinds are matched exhaustively here: a new kind must be handled,
// never swallowed by a `_` arm (ARCHITECTURE.md, "Adding a participant message").
#![warn(clippy::wildcard_enum_match_arm)]

use std::time::Duration;

use crate::contracts::{MessageKind, Participant};

/// Where each command goes.
#[derive(Debug, Clone)]
pub struct RestTransport {
    client: reqwest::Client,
    inventory_url: String,
    payment_url: String,
}

/// Result of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestOutcome {
    Delivered,
    /// Retry later (network error, 5xx, 429).
    Transient(String),
    /// The participant refused the request (4xx); retrying the same bytes will not help.
    Rejected(String),
}

impl RestTransport {
    pub fn new(inventory_url: &str, payment_url: &str, timeout: Duration) -> Result<RestTransport, String> {
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(RestTransport {
            client,
            inventory_url: inventory_url.trim_end_matches('/').to_owned(),
            payment_url: payment_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The endpoint of a command (its participant's base URL and the path the
    /// vocabulary declares), or `None` for messages REST does not carry.
    pub fn endpoint(&self, kind: MessageKind) -> Option<String> {
        let command = kind.command()?;
        let base = match command.participant {
            Participant::Inventory => &self.inventory_url,
            Participant::Payment => &self.payment_url,
        };
        Some(format!("{base}{}", command.rest_path))
    }

    /// POSTs the command's JSON with its headers.
    pub async fn deliver(
        &self,
        url: &str,
        command_id: &str,
        payload: &str,
        headers: &[(String, String)],
    ) -> RestOutcome {
        let mut req = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", command_id)
            .body(payload.to_owned());
        for (k, v) in headers {
            let name = match k.as_str() {
                "traceparent" => "traceparent".to_owned(),
                other => format!("x-{}", other.replace('_', "-")),
            };
            req = req.header(name, v);
        }
        match req.send().await {
            Err(e) => RestOutcome::Transient(e.to_string()),
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() || status.as_u16() == 409 {
                    // 409: the participant already has this command id.
                    RestOutcome::Delivered
                } else if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
                    RestOutcome::Transient(format!("{url} answered {status}"))
                } else {
                    RestOutcome::Rejected(format!("{url} answered {status}"))
                }
            }
        }
    }
}
