//! The announcement of a new approval (the contract's "Notification": a webhook with a link to
//! the UI page that shows it). Called by the gate right after an approval is created and
//! audited, before the agent gets its 202.
//!
//! Nothing is sent yet: the webhook (settings, payloads, delivery through the Fetcher in the
//! background) is filled in here, in this file only.

use crate::ports::Ports;

use super::Approval;

/// Announce `approval` (just created, pending). Never fails the request: a delivery problem
/// is the announcer's to count and log.
pub async fn notify(ports: &Ports, approval: &Approval) {
    let _ = (ports, approval);
}
