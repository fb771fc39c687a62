//! lvs-agent: reads keepalived.conf and drives the XDP direct-routing data plane.
//!
//! - `config`: keepalived.conf lexer, tree and typed model (knows nothing of run time);
//! - `desired`: config -> forwarding plan, checked against what the data plane does;
//! - `reconcile`: plan + real server MACs -> map writes (pure, behind `MapWriter`);
//! - `dataplane`: the only module that talks to aya (load, attach, maps);
//! - `ipvs`: NAT/TUN services in the kernel's IPVS over generic netlink (codec, diff, drift);
//! - `netlink`: links, addresses and neighbours (rtnetlink);
//! - `realserver`: `lvs-agent realserver up|down`;
//! - `stats`: counters in `ipvsadm -Ln --stats` layout;
//! - `control`: snapshots of the running state for the views (socket, metrics);
//! - `socket`: the root-only Unix socket behind `lvs-agent list` and `status`;
//! - `metrics`: Prometheus `/metrics` over HTTP, built from a fresh snapshot per scrape;
//! - `check`: health checkers (keepalived's), their decisions, and the plan they leave;
//! - `script`: the scripts the config names, split and run as keepalived runs them;
//! - `daemon`: `lvs-agent run`.

pub mod check;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod desired;
pub mod ipvs;
pub mod metrics;
pub mod netlink;
pub mod realserver;
pub mod reconcile;
pub mod script;
pub mod socket;
pub mod stats;
pub mod vrrp;
