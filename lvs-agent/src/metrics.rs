//! Prometheus `/metrics`: every scrape asks the event loop for a fresh snapshot
//! ([`Control::state`], per-CPU counters summed at that moment) and encodes it with
//! prometheus-client. Nothing is cached between scrapes.
//!
//! Two encodings, chosen by the scraper's `Accept` header: OpenMetrics text (what Prometheus
//! asks for first) and the classic Prometheus text format 0.0.4 (everything else: curl,
//! `promtool check metrics`, older scrapers). prometheus-client writes only OpenMetrics; the
//! 0.0.4 text is derived from it (see [`to_prometheus_text`]), which is exact for what is
//! exposed here (counters, gauges and one info metric; no exemplars, no `_created`).

use std::{
    convert::Infallible,
    fmt::{self, Write as _},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{debug, warn};

use crate::{
    control::{AgentState, Control},
    desired::socket,
    stats::{DestCounters, ServiceCounters},
};

/// Where Prometheus scrapes by default (127.0.0.1 only: expose it on purpose, not by accident).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9469";
/// Connections served at once; more are closed at once (scrapers are few).
const MAX_CONNECTIONS: usize = 16;
/// A client must send a request's headers within this time, or the connection is closed
/// (this also closes idle keep-alive connections).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a scrape waits for the event loop's snapshot.
const STATE_TIMEOUT: Duration = Duration::from_secs(10);

const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for Prometheus scrapes (--metrics-address) on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("accepting connections for /metrics: {0}")]
    Accept(#[source] std::io::Error),
}

/// Binds the metrics listener (done at start-up, before the program is attached, so a bad
/// address stops the agent with one sentence).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `GET /metrics` (and `HEAD`) on `listener` until accepting fails for good; other
/// paths get 404. Returns only on an accept error that retrying cannot cure.
pub async fn serve(listener: TcpListener, control: Control) -> Result<(), MetricsError> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) if transient(&e) => {
                warn!(%e, "accepting a /metrics connection; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(MetricsError::Accept(e)),
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "too many /metrics connections; closing this one");
            continue;
        };
        let control = control.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| respond(req, control.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(%peer, %e, "/metrics connection ended");
            }
        });
    }
}

/// Accept errors that concern one connection or a passing shortage, not the listener.
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted, WouldBlock};
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
        || matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

async fn respond(req: Request<Incoming>, control: Control) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = header::HeaderValue::from_str(content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    let plain = "text/plain; charset=utf-8";
    if req.uri().path() != "/metrics" {
        return Ok(reply(StatusCode::NOT_FOUND, plain, "not found; metrics are at /metrics\n".into()));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, plain, "GET /metrics\n".into());
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let format = negotiate(req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let state = match tokio::time::timeout(STATE_TIMEOUT, control.state(false)).await {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, plain, format!("{e}\n"))),
        Err(_) => {
            warn!("the event loop did not answer a /metrics scrape within {STATE_TIMEOUT:?}");
            return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, plain, "the agent is busy; try again\n".into()));
        }
    };
    match render(&state, format) {
        Ok(text) => Ok(reply(StatusCode::OK, format.content_type(), text)),
        Err(fmt::Error) => Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, plain, "encoding the metrics failed\n".into())),
    }
}

/// The exposition format of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Text,
}

impl Format {
    #[must_use]
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS_TYPE,
            Self::Text => TEXT_TYPE,
        }
    }
}

/// OpenMetrics when the `Accept` header lists it (with a non-zero q), else text 0.0.4.
#[must_use]
pub fn negotiate(accept: Option<&str>) -> Format {
    let wants_openmetrics = accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or_default();
            let q = params.find_map(|p| p.strip_prefix("q=")).and_then(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
            media.eq_ignore_ascii_case("application/openmetrics-text") && q > 0.0
        })
    });
    if wants_openmetrics { Format::OpenMetrics } else { Format::Text }
}

/// The exposition of `state` in `format`.
pub fn render(state: &AgentState, format: Format) -> Result<String, fmt::Error> {
    let mut registry = Registry::with_prefix("lvs");
    registry.register_collector(Box::new(Snapshot(state.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(match format {
        Format::OpenMetrics => text,
        Format::Text => to_prometheus_text(&text),
    })
}

/// OpenMetrics text to Prometheus text 0.0.4, for the metric types used here: a counter's
/// family `x` is named `x_total` (its samples' name), an info `x` becomes the gauge
/// `x_info`, and `# UNIT` and `# EOF` (unknown to 0.0.4) are dropped. Samples are unchanged.
#[must_use]
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // Families are HELP, TYPE, samples; the TYPE line says how HELP's name was to be written.
    let lines: Vec<&str> = openmetrics.lines().collect();
    let type_of = |name: &str| {
        lines.iter().find_map(|l| {
            let rest = l.strip_prefix("# TYPE ")?;
            let (n, t) = rest.split_once(' ')?;
            (n == name).then_some(t)
        })
    };
    fn rename<'k>(name: &str, kind: Option<&'k str>) -> (String, &'k str) {
        match kind {
            Some("counter") => (format!("{name}_total"), "counter"),
            Some("info") => (format!("{name}_info"), "gauge"),
            Some(other) => (name.to_string(), other),
            None => (name.to_string(), "untyped"),
        }
    }
    for line in &lines {
        if line.starts_with("# UNIT ") || *line == "# EOF" {
            continue;
        }
        if let Some((name, help)) = line.strip_prefix("# HELP ").and_then(|r| r.split_once(' ')) {
            let _ = writeln!(out, "# HELP {} {help}", rename(name, type_of(name)).0);
        } else if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' ')) {
            let (name, kind) = rename(name, Some(kind));
            let _ = writeln!(out, "# TYPE {name} {kind}");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// One scrape's state, encoded by prometheus-client when the registry is encoded.
#[derive(Debug)]
struct Snapshot(AgentState);

type Labels = Vec<(&'static str, String)>;

fn protocol(s: &ServiceCounters) -> &'static str {
    match s.key.proto() {
        lvs_common::maps::IPPROTO_TCP => "TCP",
        lvs_common::maps::IPPROTO_UDP => "UDP",
        _ => "unknown",
    }
}

/// `protocol`, `address` (as ipvsadm writes it: `10.0.0.1:80`, `[fd00::1]:80`), `scheduler`.
fn service_labels(s: &ServiceCounters) -> Labels {
    vec![
        ("protocol", protocol(s).to_string()),
        ("address", socket(s.key.ip(), s.key.port())),
        ("scheduler", s.scheduler.to_string()),
    ]
}

/// The service's labels and `server` (`addr:port`).
fn dest_labels(s: &ServiceCounters, d: &DestCounters) -> Labels {
    let mut l = service_labels(s);
    l.push(("server", socket(d.addr, d.port)));
    l
}

fn counter<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        m.encode_family(&labels)?.encode_counter::<NoLabelSet, u64, u64>(&v, None)?;
    }
    Ok(())
}

/// A counter without labels.
fn single_counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?.encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn gauge<L: EncodeLabelSet, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        m.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let st = &self.0;
        let svcs: Vec<(&ServiceCounters, Labels)> = st.services.iter().map(|s| (s, service_labels(s))).collect();
        let dests: Vec<(&DestCounters, Labels)> =
            st.services.iter().flat_map(|s| s.dests.iter().map(move |d| (d, dest_labels(s, d)))).collect();
        let sv = |f: fn(&ServiceCounters) -> u64| svcs.iter().map(move |(s, l)| (l.as_slice(), f(s)));
        let dv = |f: fn(&DestCounters) -> u64| dests.iter().map(move |(d, l)| (l.as_slice(), f(d)));

        counter(
            &mut enc,
            "service_packets",
            "Packets received for the virtual service, dropped ones included.",
            sv(|s| s.totals.packets),
        )?;
        counter(
            &mut enc,
            "service_bytes",
            "IP bytes received for the virtual service, dropped ones included.",
            sv(|s| s.totals.bytes),
        )?;
        counter(
            &mut enc,
            "service_connections",
            "New flows scheduled by the virtual service.",
            sv(|s| s.totals.conns),
        )?;
        counter(
            &mut enc,
            "service_dropped_packets",
            "Packets for the virtual service dropped because no real server could take them.",
            sv(|s| s.dropped_packets),
        )?;

        counter(
            &mut enc,
            "service_out_packets",
            "Reply packets of the virtual service through the director (kernel IPVS NAT/TUN; 0 with XDP's direct routing).",
            sv(|s| s.out.packets),
        )?;
        counter(
            &mut enc,
            "service_out_bytes",
            "Reply IP bytes of the virtual service through the director (kernel IPVS NAT/TUN; 0 with XDP's direct routing).",
            sv(|s| s.out.bytes),
        )?;
        // What forwards each service and real server, as separate series so that the labels of
        // the counters stay the same whatever forwards them.
        gauge(
            &mut enc,
            "service_forwarder",
            "1, labelled with what forwards the virtual service: xdp, or ipvs (the kernel's, for lb_kind NAT/TUN).",
            svcs.iter().map(|(s, l)| {
                let mut l = l.clone();
                l.push(("forwarder", s.forwarder.to_string()));
                (l, 1u64)
            }),
        )?;
        gauge(
            &mut enc,
            "real_server_forward",
            "1, labelled with the real server's forwarding method as ipvsadm names it (Route, Masq, Tunnel).",
            dests.iter().map(|(d, l)| {
                let mut l = l.clone();
                l.push(("forward", d.forward.to_string()));
                (l, 1u64)
            }),
        )?;

        counter(&mut enc, "real_server_packets", "Packets forwarded to the real server.", dv(|d| d.stats.packets))?;
        counter(
            &mut enc,
            "real_server_out_packets",
            "Reply packets from the real server through the director (kernel IPVS NAT/TUN only).",
            dv(|d| d.out.packets),
        )?;
        counter(
            &mut enc,
            "real_server_out_bytes",
            "Reply IP bytes from the real server through the director (kernel IPVS NAT/TUN only).",
            dv(|d| d.out.bytes),
        )?;
        counter(&mut enc, "real_server_bytes", "IP bytes forwarded to the real server.", dv(|d| d.stats.bytes))?;
        counter(&mut enc, "real_server_connections", "New flows scheduled to the real server.", dv(|d| d.stats.conns))?;
        gauge(
            &mut enc,
            "real_server_active_connections",
            "Established connections to the real server (ipvsadm ActiveConn).",
            dv(|d| u64::from(d.conns.active)),
        )?;
        gauge(
            &mut enc,
            "real_server_inactive_connections",
            "Other connections to the real server (ipvsadm InActConn).",
            dv(|d| u64::from(d.conns.inactive)),
        )?;
        gauge(&mut enc, "real_server_weight", "Configured weight of the real server.", dv(|d| u64::from(d.weight)))?;
        let up = |addr: IpAddr, weight: u32| u64::from(weight > 0 && !st.unresolved.contains(&addr));
        gauge(
            &mut enc,
            "real_server_up",
            "1 when the real server can take new flows (MAC resolved, weight above 0), else 0.",
            dests.iter().map(|(d, l)| (l.as_slice(), up(d.addr, d.weight))),
        )?;

        // Without VRRP instances the families are left out (as before VRRP existed).
        if !st.vrrp.is_empty() {
            vrrp_families(&mut enc, &st.vrrp)?;
        }
        health_metrics(&mut enc, st)?;

        enc.encode_descriptor("build", "The agent's version.", None, MetricType::Info)?
            .encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        let started = st.started.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        enc.encode_descriptor(
            "start_time",
            "When the agent started, in seconds since the Unix epoch.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?
        .encode_gauge(&started)?;
        single_counter(&mut enc, "reloads", "Configuration reloads applied (SIGHUP).", st.reloads)?;
        single_counter(
            &mut enc,
            "reload_failures",
            "Configuration reloads rejected; the running configuration stayed.",
            st.reload_failures,
        )?;
        single_counter(
            &mut enc,
            "orphan_fragments",
            "Later IP fragments whose first fragment was not seen, passed to the kernel.",
            st.orphan_fragments,
        )?;
        single_counter(
            &mut enc,
            "icmp_forwarded",
            "ICMP errors about a flow forwarded to the flow's real server.",
            st.icmp_forwarded,
        )?;
        Ok(())
    }
}

/// State, priority, transitions and advert counters per VRRP instance (`instance`, `vrid`,
/// `interface` labels); rejected adverts also by `reason`, every reason present (0 included).
fn vrrp_families(enc: &mut DescriptorEncoder, vrrp_all: &[crate::vrrp::InstanceStatus]) -> fmt::Result {
    let vrrp = |v: &crate::vrrp::InstanceStatus| -> Labels {
        vec![("instance", v.name.clone()), ("vrid", v.vrid.to_string()), ("interface", v.interface.clone())]
    };
    gauge(
        enc,
        "vrrp_state",
        "VRRP state of the instance: 0 init, 1 backup, 2 master, 3 fault.",
        vrrp_all.iter().map(|v| (vrrp(v), v.state.gauge())),
    )?;
    gauge(enc, "vrrp_priority", "VRRP priority in force.", vrrp_all.iter().map(|v| (vrrp(v), i64::from(v.priority))))?;
    counter(enc, "vrrp_transitions", "VRRP state changes.", vrrp_all.iter().map(|v| (vrrp(v), v.transitions)))?;
    counter(enc, "vrrp_adverts_sent", "VRRP advertisements sent.", vrrp_all.iter().map(|v| (vrrp(v), v.adverts_sent)))?;
    counter(
        enc,
        "vrrp_adverts_received",
        "Valid VRRP advertisements received.",
        vrrp_all.iter().map(|v| (vrrp(v), v.adverts_received)),
    )?;
    counter(
        enc,
        "vrrp_adverts_rejected",
        "VRRP advertisements dropped by the RFC 3768/5798 7.1 checks, by reason.",
        vrrp_all.iter().flat_map(|v| {
            crate::vrrp::packet::Reject::LABELS.iter().map(move |why| {
                let mut l = vrrp(v);
                l.push(("reason", (*why).to_string()));
                (l, v.rejected.get(why).copied().unwrap_or(0))
            })
        }),
    )?;
    Ok(())
}

/// Health of every configured real server of a served service, and of each of its checkers:
/// `real_server_healthy`, `check_up` (with `reason`, the last failure or `none`: a fixed
/// set, see `check::target::Failure`), `check_duration_seconds` (the last check) and
/// `check_failures` per reason.
fn health_metrics(enc: &mut DescriptorEncoder, st: &AgentState) -> fmt::Result {
    let labels = |row: &crate::check::HealthRow| -> Labels {
        let scheduler = st.services.iter().find(|s| s.key == row.service).map_or("", |s| s.scheduler);
        let protocol = match row.service.proto() {
            lvs_common::maps::IPPROTO_UDP => "UDP",
            _ => "TCP",
        };
        vec![
            ("protocol", protocol.to_string()),
            ("address", socket(row.service.ip(), row.service.port())),
            ("scheduler", scheduler.to_string()),
            ("server", socket(row.addr, row.port)),
        ]
    };
    // Real servers without checkers have no health row: they are always healthy.
    let checked: std::collections::HashSet<(crate::desired::ServiceKey, std::net::IpAddr)> =
        st.health.iter().map(|r| (r.service, r.addr)).collect();
    let unchecked: Vec<crate::check::HealthRow> = st
        .services
        .iter()
        .flat_map(|s| s.dests.iter().map(move |d| (s.key, d)))
        .filter(|(key, d)| !checked.contains(&(*key, d.addr)))
        .map(|(service, d)| crate::check::HealthRow {
            service,
            addr: d.addr,
            port: d.port,
            up: true,
            planned_weight: Some(d.weight),
            checkers: Vec::new(),
        })
        .collect();
    let rows: Vec<(&crate::check::HealthRow, Labels)> =
        st.health.iter().chain(&unchecked).map(|r| (r, labels(r))).collect();
    gauge(
        enc,
        "real_server_healthy",
        "1 while every health checker of the real server succeeds (always 1 without checkers), else 0.",
        rows.iter().map(|(r, l)| (l.as_slice(), u64::from(r.up))),
    )?;
    let checker_labels = |l: &Labels, i: usize, c: &crate::check::CheckerHealth| {
        let mut l = l.clone();
        l.push(("checker", c.kind.to_string()));
        l.push(("index", i.to_string()));
        l
    };
    let checkers: Vec<(&crate::check::CheckerHealth, Labels)> = rows
        .iter()
        .flat_map(|(r, l)| r.checkers.iter().enumerate().map(move |(i, c)| (c, checker_labels(l, i, c))))
        .collect();
    gauge(
        enc,
        "check_up",
        "1 while the checker considers the real server up; reason is the last check's failure (none after a success).",
        checkers.iter().map(|(c, l)| {
            let mut l = l.clone();
            l.push(("reason", c.last_failure.map_or("none", |f| f.as_str()).to_string()));
            (l, u64::from(c.up))
        }),
    )?;
    let mut m = enc.encode_descriptor(
        "check_duration",
        "How long the checker's last check took.",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    for (c, l) in &checkers {
        m.encode_family(&l.as_slice())?.encode_gauge(&c.last_duration.as_secs_f64())?;
    }
    counter(
        enc,
        "check_failures",
        "Failed checks, per reason.",
        checkers.iter().flat_map(|(c, l)| {
            crate::check::target::Failure::ALL.iter().zip(c.failures).filter(|(_, n)| *n > 0).map(move |(f, n)| {
                let mut l = l.clone();
                l.push(("reason", f.as_str().to_string()));
                (l, n)
            })
        }),
    )
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::SystemTime};

    use lvs_common::maps::{ConnCounts, DestStats, IPPROTO_TCP, IPPROTO_UDP};

    use super::*;
    use crate::desired::ServiceKey;

    fn state() -> AgentState {
        let dest = |addr: IpAddr, weight, conns, active, inactive| DestCounters {
            addr,
            port: 80,
            weight,
            forward: "Route",
            stats: DestStats { packets: conns * 6, bytes: conns * 400, conns },
            out: crate::stats::OutStats::default(),
            conns: ConnCounts { active, inactive },
        };
        AgentState {
            interface: "eth0".into(),
            xdp_mode: "native",
            config: PathBuf::from("/etc/keepalived/keepalived.conf"),
            started: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            services: vec![
                ServiceCounters {
                    key: ServiceKey::new([10, 0, 0, 100].into(), 80, IPPROTO_TCP),
                    scheduler: "wrr",
                    persistent: None,
                    forwarder: crate::stats::XDP,
                    flags: String::new(),
                    out: crate::stats::OutStats::default(),
                    totals: DestStats { packets: 18_006, bytes: 1_200_500, conns: 3000 },
                    dropped_packets: 6,
                    dests: vec![
                        dest([10, 0, 0, 11].into(), 1, 1000, 3, 997),
                        dest([10, 0, 0, 12].into(), 2, 2000, 0, 2000),
                        dest([10, 0, 0, 13].into(), 0, 0, 0, 0),
                    ],
                },
                ServiceCounters {
                    key: ServiceKey::new("fd00::100".parse().unwrap(), 53, IPPROTO_UDP),
                    scheduler: "rr",
                    persistent: Some(300),
                    forwarder: crate::stats::XDP,
                    flags: String::new(),
                    out: crate::stats::OutStats::default(),
                    totals: DestStats { packets: 7, bytes: 700, conns: 7 },
                    dropped_packets: 0,
                    dests: vec![dest("fd00::11".parse().unwrap(), 1, 7, 0, 0)],
                },
            ],
            rates: Vec::new(),
            connections: None,
            unresolved: vec!["10.0.0.12".parse().unwrap()],
            reloads: 2,
            reload_failures: 1,
            health: vec![crate::check::HealthRow {
                service: ServiceKey::new([10, 0, 0, 100].into(), 80, IPPROTO_TCP),
                addr: [10, 0, 0, 13].into(),
                port: 80,
                up: false,
                planned_weight: Some(0),
                checkers: vec![crate::check::CheckerHealth {
                    kind: "HTTP_GET",
                    up: false,
                    last_failure: Some(crate::check::target::Failure::Status),
                    last_duration: Duration::from_millis(2),
                    failures: [0, 0, 0, 3, 0, 0, 0, 0],
                }],
            }],
            orphan_fragments: 4,
            icmp_forwarded: 5,
            vrrp: Vec::new(),
        }
    }

    const SVC: &str = r#"protocol="TCP",address="10.0.0.100:80",scheduler="wrr""#;
    const SVC6: &str = r#"protocol="UDP",address="[fd00::100]:53",scheduler="rr""#;

    #[test]
    fn openmetrics_has_every_series_with_its_labels() {
        let text = render(&state(), Format::OpenMetrics).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let has = |l: String| assert!(lines.contains(&l.as_str()), "missing `{l}` in:\n{text}");
        has(format!("lvs_service_packets_total{{{SVC}}} 18006"));
        has(format!("lvs_service_bytes_total{{{SVC}}} 1200500"));
        has(format!("lvs_service_connections_total{{{SVC}}} 3000"));
        has(format!("lvs_service_dropped_packets_total{{{SVC}}} 6"));
        has(format!("lvs_service_connections_total{{{SVC6}}} 7"));
        let rs = |ip: &str| format!(r#"{SVC},server="{ip}:80""#);
        has(format!("lvs_real_server_packets_total{{{}}} 6000", rs("10.0.0.11")));
        has(format!("lvs_real_server_bytes_total{{{}}} 400000", rs("10.0.0.11")));
        has(format!("lvs_real_server_connections_total{{{}}} 1000", rs("10.0.0.11")));
        has(format!("lvs_real_server_connections_total{{{}}} 2000", rs("10.0.0.12")));
        has(format!("lvs_real_server_active_connections{{{}}} 3", rs("10.0.0.11")));
        has(format!("lvs_real_server_inactive_connections{{{}}} 997", rs("10.0.0.11")));
        has(format!("lvs_real_server_weight{{{}}} 2", rs("10.0.0.12")));
        // Up: resolved with weight; down: unresolved MAC (.12), weight 0 (.13).
        has(format!("lvs_real_server_up{{{}}} 1", rs("10.0.0.11")));
        has(format!("lvs_real_server_up{{{}}} 0", rs("10.0.0.12")));
        has(format!("lvs_real_server_up{{{}}} 0", rs("10.0.0.13")));
        has(format!(r#"lvs_real_server_up{{{SVC6},server="[fd00::11]:80"}} 1"#));
        has(format!(r#"lvs_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION")));
        has("lvs_start_time_seconds 1700000000.0".into());
        has("lvs_reloads_total 2".into());
        has("lvs_reload_failures_total 1".into());
        has("lvs_orphan_fragments_total 4".into());
        has("lvs_icmp_forwarded_total 5".into());
        has("# TYPE lvs_real_server_connections counter".into());
        has("# TYPE lvs_real_server_up gauge".into());
        has("# TYPE lvs_build info".into());
        has("# UNIT lvs_start_time_seconds seconds".into());
        let hc = r#"protocol="TCP",address="10.0.0.100:80",scheduler="wrr",server="10.0.0.13:80""#;
        has(format!("lvs_real_server_healthy{{{hc}}} 0"));
        has(format!(r#"lvs_check_up{{{hc},checker="HTTP_GET",index="0",reason="status"}} 0"#));
        has(format!(r#"lvs_check_duration_seconds{{{hc},checker="HTTP_GET",index="0"}} 0.002"#));
        has(format!(r#"lvs_check_failures_total{{{hc},checker="HTTP_GET",index="0",reason="status"}} 3"#));
        // What forwards: XDP here (kernel IPVS services are labelled ipvs and Masq/Tunnel).
        has(format!(r#"lvs_service_forwarder{{{SVC},forwarder="xdp"}} 1"#));
        has(format!(r#"lvs_real_server_forward{{{},forward="Route"}} 1"#, rs("10.0.0.11")));
        has(format!("lvs_real_server_out_packets_total{{{}}} 0", rs("10.0.0.11")));
        has(format!("lvs_service_out_bytes_total{{{SVC}}} 0"));
        assert_eq!(lines.last(), Some(&"# EOF"));
        // A real server without checkers is healthy.
        has(format!("lvs_real_server_healthy{{{}}} 1", rs("10.0.0.11")));
        // 7 service + 10 real-server + 4 health + 6 agent families; 2 + 4 + 1 (each health
        // family; real_server_healthy also has the 3 servers without checkers) samples each,
        // and 6 agent ones.
        assert_eq!(lines.iter().filter(|l| l.starts_with("# TYPE ")).count(), 27);
        assert_eq!(lines.iter().filter(|l| !l.starts_with('#')).count(), 7 * 2 + 10 * 4 + 4 + 3 + 6);
    }

    #[test]
    fn vrrp_instances_have_state_and_advert_series() {
        let mut st = state();
        st.vrrp = vec![crate::vrrp::InstanceStatus {
            name: "VI_1".into(),
            state: crate::vrrp::state::State::Backup,
            priority: 100,
            vrid: 51,
            version: 3,
            interface: "eth0".into(),
            vips: vec!["10.0.0.100".parse().unwrap()],
            transitions: 1,
            adverts_sent: 0,
            adverts_received: 12,
            rejected: [("checksum", 3u64)].into(),
        }];
        let text = render(&st, Format::OpenMetrics).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let l = r#"instance="VI_1",vrid="51",interface="eth0""#;
        for want in [
            format!("lvs_vrrp_state{{{l}}} 1"),
            format!("lvs_vrrp_priority{{{l}}} 100"),
            format!("lvs_vrrp_transitions_total{{{l}}} 1"),
            format!("lvs_vrrp_adverts_received_total{{{l}}} 12"),
            format!(r#"lvs_vrrp_adverts_rejected_total{{{l},reason="checksum"}} 3"#),
            format!(r#"lvs_vrrp_adverts_rejected_total{{{l},reason="ttl"}} 0"#),
        ] {
            assert!(lines.contains(&want.as_str()), "missing `{want}` in:\n{text}");
        }
    }

    #[test]
    fn prometheus_text_names_families_as_their_samples() {
        let text = render(&state(), Format::Text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for l in [
            "# HELP lvs_real_server_connections_total New flows scheduled to the real server.",
            "# TYPE lvs_real_server_connections_total counter",
            "# TYPE lvs_real_server_up gauge",
            "# TYPE lvs_build_info gauge",
            "# TYPE lvs_start_time_seconds gauge",
            "lvs_start_time_seconds 1700000000.0",
        ] {
            assert!(lines.contains(&l), "missing `{l}` in:\n{text}");
        }
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        // Every sample belongs to the family declared last before it.
        let mut family = "";
        for l in &lines {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert_eq!(name, family, "{l}");
            }
        }
        // Same samples as the OpenMetrics text.
        let samples = |t: &str| t.lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect::<Vec<_>>();
        assert_eq!(samples(&text), samples(&render(&state(), Format::OpenMetrics).unwrap()));
    }

    #[test]
    fn no_services_is_still_a_valid_exposition() {
        let mut st = state();
        st.services.clear();
        st.started = SystemTime::UNIX_EPOCH;
        let text = render(&st, Format::OpenMetrics).unwrap();
        assert!(text.contains("# TYPE lvs_service_packets counter\n"));
        assert!(!text.contains("lvs_service_packets_total"));
        assert!(text.contains("lvs_reloads_total 2\n"));
    }

    #[test]
    fn negotiation_follows_accept() {
        // What Prometheus 2.x sends.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(negotiate(Some("application/openmetrics-text;q=0")), Format::Text);
    }
}
