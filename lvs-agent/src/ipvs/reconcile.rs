//! What to send the kernel so that its IPVS table becomes the desired one: a pure diff of the
//! desired services against a dump, as an ordered list of requests. Entries that are right are
//! not touched (no request names them), so their connections and counters carry on.
//!
//! The agent owns the IPVS table of its network namespace, as keepalived does in practice:
//! services and destinations that the config does not ask for are removed.

use std::collections::HashMap;

use super::codec::{
    Dest, IP_VS_CONN_F_FWD_MASK, IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_TUNNEL_TYPE_GUE, IP_VS_CONN_F_TUNNEL_TYPE_IPIP,
    Request, Service, ServiceId,
};

/// A service with its destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub service: Service,
    pub dests: Vec<Dest>,
}

impl Table {
    /// The service as the agent keys services elsewhere (health, views); fwmark services have
    /// no such key.
    #[must_use]
    pub fn key(&self) -> Option<crate::desired::ServiceKey> {
        match self.service.id {
            ServiceId::Addr { protocol, addr, port } => {
                Some(crate::desired::ServiceKey::new(addr, port, u8::try_from(protocol).ok()?))
            }
            ServiceId::Fwmark { .. } => None,
        }
    }
}

/// Whether the kernel's service already has the settings `want` asks for (identity aside).
fn service_matches(want: &Service, have: &Service) -> bool {
    want.scheduler == have.scheduler
        && want.flags == have.flags
        && want.timeout == have.timeout
        && want.netmask == have.netmask
        && want.pe_name == have.pe_name
}

/// Whether the kernel's destination already has `want`'s settings. Tunnel fields matter only
/// for tunnel destinations, and only those libipvs sends for the tunnel type.
fn dest_matches(want: &Dest, have: &Dest) -> bool {
    let fwd = want.fwd & IP_VS_CONN_F_FWD_MASK;
    let tunnel_ok = fwd != IP_VS_CONN_F_TUNNEL
        || (want.tunnel.kind == have.tunnel.kind
            && (want.tunnel.kind != IP_VS_CONN_F_TUNNEL_TYPE_GUE || want.tunnel.port == have.tunnel.port)
            && (want.tunnel.kind == IP_VS_CONN_F_TUNNEL_TYPE_IPIP || want.tunnel.flags == have.tunnel.flags));
    fwd == have.fwd & IP_VS_CONN_F_FWD_MASK
        && want.weight == have.weight
        && want.u_thresh == have.u_thresh
        && want.l_thresh == have.l_thresh
        && tunnel_ok
}

/// The requests that turn `have` (a dump) into `want`: first the services nobody asks for go
/// (their destinations with them), then per desired service, in `want`'s order, the service is
/// created or corrected, destinations not asked for go, changed ones are set, missing ones are
/// added. Removing before adding keeps a destination's address free when a service is
/// reshaped, and a weight change never passes through a moment with both old and new entries.
#[must_use]
pub fn diff(want: &[Table], have: &[Table]) -> Vec<Request> {
    let have_by_id: HashMap<ServiceId, &Table> = have.iter().map(|t| (t.service.id, t)).collect();
    let wanted: std::collections::HashSet<ServiceId> = want.iter().map(|t| t.service.id).collect();
    let mut ops: Vec<Request> =
        have.iter().filter(|t| !wanted.contains(&t.service.id)).map(|t| Request::DelService(t.service.id)).collect();
    for w in want {
        let id = w.service.id;
        let Some(h) = have_by_id.get(&id) else {
            ops.push(Request::NewService(w.service.clone()));
            ops.extend(w.dests.iter().map(|d| Request::NewDest(id, d.clone())));
            continue;
        };
        if !service_matches(&w.service, &h.service) {
            ops.push(Request::SetService(w.service.clone()));
        }
        let key = |d: &Dest| (d.addr, d.port);
        let want_dests: HashMap<_, &Dest> = w.dests.iter().map(|d| (key(d), d)).collect();
        let have_dests: HashMap<_, &Dest> = h.dests.iter().map(|d| (key(d), d)).collect();
        ops.extend(
            h.dests.iter().filter(|d| !want_dests.contains_key(&key(d))).map(|d| Request::DelDest(id, d.clone())),
        );
        for d in &w.dests {
            match have_dests.get(&key(d)) {
                None => ops.push(Request::NewDest(id, d.clone())),
                Some(hd) if !dest_matches(d, hd) => ops.push(Request::SetDest(id, d.clone())),
                Some(_) => {}
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::codec::{IP_VS_CONN_F_MASQ, IP_VS_SVC_F_PERSISTENT, Stats, TunnelParams};

    fn svc(port: u16, sched: &str) -> Service {
        Service {
            id: ServiceId::Addr { protocol: 6, addr: [10, 0, 0, 100].into(), port },
            scheduler: sched.into(),
            flags: 0,
            timeout: 0,
            netmask: u32::MAX,
            pe_name: None,
            stats: Stats::default(),
        }
    }

    fn dest(last: u8, weight: u32) -> Dest {
        Dest::new([10, 0, 1, last].into(), 8080, IP_VS_CONN_F_MASQ, weight)
    }

    /// What a dump returns for `t`: the same settings plus counters, which never count as drift.
    fn dumped(t: &Table) -> Table {
        let mut t = t.clone();
        t.service.stats.conns = 42;
        for d in &mut t.dests {
            d.active_conns = 3;
            d.stats.inpkts = 99;
        }
        t
    }

    #[test]
    fn an_empty_kernel_gets_every_service_then_its_dests() {
        let want = [Table { service: svc(80, "rr"), dests: vec![dest(1, 1), dest(2, 2)] }];
        let ops = diff(&want, &[]);
        let id = want[0].service.id;
        assert_eq!(
            ops,
            [Request::NewService(svc(80, "rr")), Request::NewDest(id, dest(1, 1)), Request::NewDest(id, dest(2, 2)),]
        );
    }

    #[test]
    fn a_kernel_that_matches_gets_nothing() {
        let want = [
            Table { service: svc(80, "rr"), dests: vec![dest(1, 1), dest(2, 2)] },
            Table { service: svc(443, "wlc"), dests: vec![dest(3, 0)] },
        ];
        let have: Vec<Table> = want.iter().rev().map(dumped).collect();
        assert_eq!(diff(&want, &have), []);
    }

    #[test]
    fn drift_is_repaired_and_only_drift() {
        let want = [
            Table { service: svc(80, "rr"), dests: vec![dest(1, 1), dest(2, 2), dest(3, 1)] },
            Table { service: svc(443, "wlc"), dests: vec![dest(3, 1)] },
        ];
        let mut have: Vec<Table> = want.iter().map(dumped).collect();
        // ipvsadm -d (dest 2 gone), ipvsadm -a (dest 9 added), ipvsadm -e (dest 3 weight 5),
        // ipvsadm -E -s sh on the second service, and a service of someone else's.
        have[0].dests.remove(1);
        have[0].dests.push(dest(9, 1));
        have[0].dests[1].weight = 5;
        have[1].service.scheduler = "sh".into();
        let stranger = Table { service: svc(25, "rr"), dests: vec![dest(7, 1)] };
        have.push(stranger.clone());
        let a = want[0].service.id;
        assert_eq!(
            diff(&want, &have),
            [
                Request::DelService(stranger.service.id),
                Request::DelDest(a, dest(9, 1)),
                Request::NewDest(a, dest(2, 2)),
                Request::SetDest(a, dest(3, 1)),
                Request::SetService(svc(443, "wlc")),
            ]
        );
    }

    #[test]
    fn persistence_and_tunnel_settings_are_compared() {
        let mut p = svc(80, "rr");
        (p.flags, p.timeout, p.netmask) = (IP_VS_SVC_F_PERSISTENT, 300, u32::from_ne_bytes([255, 255, 255, 0]));
        let mut tun = Dest::new([10, 0, 2, 1].into(), 80, IP_VS_CONN_F_TUNNEL, 1);
        tun.tunnel = TunnelParams { kind: IP_VS_CONN_F_TUNNEL_TYPE_GUE, port: 6080, flags: 1 };
        let want = [Table { service: p.clone(), dests: vec![tun.clone()] }];
        let mut have = vec![dumped(&want[0])];
        assert_eq!(diff(&want, &have), []);
        have[0].service.timeout = 360;
        have[0].dests[0].tunnel.port = 5555;
        let id = p.id;
        assert_eq!(diff(&want, &have), [Request::SetService(p), Request::SetDest(id, tun.clone())]);
        // The kernel reports tunnel fields for every destination; a masquerading one ignores them.
        let mut masq = tun.clone();
        masq.fwd = IP_VS_CONN_F_MASQ;
        let mut have_masq = masq.clone();
        have_masq.tunnel = TunnelParams::default();
        assert!(dest_matches(&masq, &have_masq));
        // A forwarding method changed behind our back is drift.
        assert!(!dest_matches(&tun, &have_masq));
    }
}
