//! How views of the running agent (the `list`/`status` socket, Prometheus `/metrics`) get its
//! state: a request into the event loop, which owns the maps, answered with a snapshot read
//! at that moment (per-CPU counters summed when asked, never cached).

use std::{net::IpAddr, path::PathBuf, time::SystemTime};

use tokio::sync::{mpsc, oneshot};

use crate::stats::{Connection, RateKey, Rates, ServiceCounters};

/// What the loop answers.
#[derive(Debug, Clone)]
pub struct AgentState {
    pub interface: String,
    pub xdp_mode: &'static str,
    pub config: PathBuf,
    pub started: SystemTime,
    /// Services with their real servers, counters and connections.
    pub services: Vec<ServiceCounters>,
    /// Rates of services and real servers (IPVS's estimator).
    pub rates: Vec<(RateKey, Rates)>,
    /// The flow table, when asked for.
    pub connections: Option<Vec<Connection>>,
    /// Real servers whose MAC is not resolved yet (they take no new flows).
    pub unresolved: Vec<IpAddr>,
    /// Reloads applied and rejected since start.
    pub reloads: u64,
    pub reload_failures: u64,
    /// Health of every real server of a planned service (checked or not).
    pub health: Vec<crate::check::HealthRow>,
    /// Later fragments with no first fragment seen; ICMP errors forwarded.
    pub orphan_fragments: u64,
    pub icmp_forwarded: u64,
}

/// A request for the state; `connections` asks for the flow table too (costly).
#[derive(Debug)]
pub struct StateRequest {
    pub connections: bool,
    pub reply: oneshot::Sender<AgentState>,
}

/// The handle views use.
#[derive(Debug, Clone)]
pub struct Control {
    tx: mpsc::Sender<StateRequest>,
}

#[derive(Debug, thiserror::Error)]
#[error("the agent's event loop is gone")]
pub struct Gone;

impl Control {
    #[must_use]
    pub fn new() -> (Self, mpsc::Receiver<StateRequest>) {
        let (tx, rx) = mpsc::channel(16);
        (Self { tx }, rx)
    }

    pub async fn state(&self, connections: bool) -> Result<AgentState, Gone> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(StateRequest { connections, reply }).await.map_err(|_| Gone)?;
        rx.await.map_err(|_| Gone)
    }
}
