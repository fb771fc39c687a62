//! From keepalived.conf's `vrrp_instance` blocks to what the runtime needs per virtual router,
//! with keepalived's defaults, and every refusal at its file:line.

use std::{net::IpAddr, time::Duration};

use super::{
    packet::{Auth, Expect, MCAST_V4, MCAST_V6, V4Checksum, Version},
    state::Params,
};
use crate::config::{AuthType, Config, Diagnostic, Location, Notify, VrrpInstance};

/// One virtual router as the runtime runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: Version,
    pub ipv6: bool,
    pub priority: u8,
    pub advert_int: Duration,
    /// VIPs with their prefix length (keepalived's default /32, /128).
    pub vips: Vec<(IpAddr, u8)>,
    /// `virtual_ipaddress_excluded`: held with the VIPs but not listed in adverts (either
    /// family: keepalived's way to carry IPv6 addresses with an IPv4 instance).
    pub excluded: Vec<(IpAddr, u8)>,
    /// The multicast group adverts go to (global_defs `vrrp_mcast_group4` / `6`).
    pub mcast_group: IpAddr,
    pub auth: Auth,
    pub v4_checksum: V4Checksum,
    pub unicast_src: Option<IpAddr>,
    pub unicast_peers: Vec<IpAddr>,
    /// Per peer `min_ttl` / `max_ttl` (keepalived checks unicast TTLs only when given).
    pub peer_ttls: Vec<(IpAddr, Option<u8>, Option<u8>)>,
    /// `check_unicast_src` (or global `vrrp_check_unicast_src`): adverts from others dropped.
    pub check_unicast_src: bool,
    pub unicast_ttl: u8,
    pub mcast_src: Option<IpAddr>,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub lower_prio_advert: bool,
    pub garp_delay: Duration,
    pub garp_repeat: u32,
    pub garp_refresh: Option<Duration>,
    pub garp_refresh_repeat: u32,
    /// `down_timer_adverts` (default 3).
    pub down_adverts: u32,
    /// `track_interface`: (name, weight). Weight 0: down means FAULT.
    pub track_interfaces: Vec<(String, i32)>,
    /// `dont_track_primary`: the instance's own interface going down is not a FAULT.
    pub dont_track_primary: bool,
    /// `track_script`: (script name, weight, reverse). Weight 0: failure means FAULT.
    pub track_scripts: Vec<(String, i32, bool)>,
    pub notify: Notify,
    pub location: Location,
}

impl Spec {
    /// Every address the instance holds while master: VIPs, then excluded ones.
    pub fn held(&self) -> impl Iterator<Item = &(IpAddr, u8)> {
        self.vips.iter().chain(&self.excluded)
    }

    /// The advert interval in the version's unit (v2 seconds, v3 centiseconds).
    #[must_use]
    pub fn interval_units(&self) -> u16 {
        match self.version {
            Version::V2 => self.advert_int.as_secs().clamp(1, 255) as u16,
            Version::V3 => (self.advert_int.as_millis() / 10).clamp(1, 4095) as u16,
        }
    }

    /// keepalived's unicast checks, beyond `packet::verify`: the TTL bounds of the sending
    /// peer, and with `check_unicast_src` the sender being a peer at all.
    pub fn check_unicast(&self, src: IpAddr, ttl: u8) -> Result<(), super::packet::Reject> {
        if self.unicast_peers.is_empty() {
            return Ok(());
        }
        match self.peer_ttls.iter().find(|p| p.0 == src) {
            Some((_, min, max)) => {
                if min.is_some_and(|m| ttl < m) || max.is_some_and(|m| ttl > m) {
                    return Err(super::packet::Reject::Ttl(ttl));
                }
                Ok(())
            }
            None if self.check_unicast_src => Err(super::packet::Reject::Source),
            None => Ok(()),
        }
    }

    /// What adverts to this router must match (`packet::verify`).
    #[must_use]
    pub fn expect(&self) -> Expect {
        Expect {
            version: self.version,
            vrid: self.vrid,
            auth: self.auth,
            interval: self.interval_units(),
            v4_checksum: self.v4_checksum,
            // keepalived checks the TTL of multicast adverts only.
            check_ttl: self.unicast_peers.is_empty(),
        }
    }

    /// The state machine's parameters, with `primary` our address on the interface.
    #[must_use]
    pub fn params(&self, primary: IpAddr) -> Params {
        let mut p = Params::new(self.version, self.priority, self.advert_int, primary);
        p.preempt = self.preempt;
        p.preempt_delay = self.preempt_delay;
        p.lower_prio_advert = self.lower_prio_advert;
        p.garp_delay = self.garp_delay;
        p.garp_repeat = self.garp_repeat;
        p.garp_refresh = self.garp_refresh;
        p.garp_refresh_repeat = self.garp_refresh_repeat;
        p.down_adverts = self.down_adverts;
        p
    }
}

/// What a reload does to the running instances (keepalived's `clear_diff_vrrp`), by index
/// into the running specs (`old`) and the reloaded ones (`new`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Same instance, same settings: goes on untouched.
    pub unchanged: Vec<(usize, usize)>,
    /// Same instance, other settings (priority, interval, VIPs, tracking, ...): goes on in its
    /// state and takes them.
    pub changed: Vec<(usize, usize)>,
    /// Gone from the config: stops as at shutdown.
    pub removed: Vec<usize>,
    /// New: starts as at start-up.
    pub added: Vec<usize>,
}

impl Spec {
    /// The same virtual router: same name, and the same interface, VRID, family and group. A
    /// change of any of these is a remove and an add (keepalived's reload matches instances
    /// by name, and a router on another wire or VRID is another router, RFC 5798 §5.2.3).
    #[must_use]
    pub fn same_router(&self, other: &Spec) -> bool {
        self.name == other.name
            && self.interface == other.interface
            && self.vrid == other.vrid
            && self.ipv6 == other.ipv6
            && self.mcast_group == other.mcast_group
    }

    /// Equal settings; where they are written in the file does not count.
    #[must_use]
    pub fn same_settings(&self, other: &Spec) -> bool {
        Spec { location: other.location.clone(), ..self.clone() } == *other
    }
}

/// The per-instance difference between what runs and a reloaded config.
#[must_use]
pub fn diff(old: &[Spec], new: &[Spec]) -> Diff {
    let mut d = Diff::default();
    for (o, s) in old.iter().enumerate() {
        match new.iter().position(|n| n.same_router(s)) {
            Some(n) if s.same_settings(&new[n]) => d.unchanged.push((o, n)),
            Some(n) => d.changed.push((o, n)),
            None => d.removed.push(o),
        }
    }
    d.added = (0..new.len()).filter(|n| !old.iter().any(|s| s.same_router(&new[*n]))).collect();
    d
}

/// Every instance of the config, or every reason why not. `default_interface` is the
/// agent's `-i`, for instances without `interface`.
pub fn specs(config: &Config, default_interface: &str) -> Result<Vec<Spec>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for i in &config.vrrp_instances {
        match spec(config, i, default_interface) {
            Ok(s) => out.push(s),
            Err(message) => errors.push(Diagnostic { location: i.location.clone(), message }),
        }
    }
    for (n, a) in out.iter().enumerate() {
        for b in &out[n + 1..] {
            if a.interface == b.interface && a.vrid == b.vrid && a.ipv6 == b.ipv6 {
                errors.push(Diagnostic {
                    location: b.location.clone(),
                    message: format!(
                        "vrrp_instance {}: virtual_router_id {} is already used on {} by vrrp_instance {} ({})",
                        b.name, b.vrid, b.interface, a.name, a.location
                    ),
                });
            }
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn spec(config: &Config, i: &VrrpInstance, default_interface: &str) -> Result<Spec, String> {
    let g = &config.global_defs;
    let name = &i.name;
    let vrid = i.virtual_router_id.ok_or_else(|| format!("vrrp_instance {name} has no virtual_router_id"))?;
    if vrid == 0 {
        return Err(format!("vrrp_instance {name}: virtual_router_id must be 1-255"));
    }
    if i.priority == 0 {
        return Err(format!("vrrp_instance {name}: priority must be 1-255"));
    }
    if i.virtual_ipaddress.is_empty() {
        return Err(format!("vrrp_instance {name} has no virtual_ipaddress"));
    }
    let ipv6 = i.virtual_ipaddress[0].addr.is_ipv6();
    if let Some(v) = i.virtual_ipaddress.iter().find(|v| v.addr.is_ipv6() != ipv6) {
        return Err(format!(
            "vrrp_instance {name}: virtual_ipaddress {} ({}) is not of the family of the first, {}",
            v.addr, v.location, i.virtual_ipaddress[0].addr
        ));
    }
    let version = match (i.version.or(g.vrrp_version).unwrap_or(2), ipv6) {
        // keepalived: IPv6 instances are always VRRPv3 (RFC 3768 is IPv4 only).
        (_, true) | (3, _) => Version::V3,
        _ => Version::V2,
    };
    let advert_int = match version {
        // RFC 3768 §5.3.7: whole seconds; keepalived rounds.
        Version::V2 => Duration::from_secs((i.advert_int.as_secs_f64().round() as u64).clamp(1, 255)),
        Version::V3 => Duration::from_millis(((i.advert_int.as_millis() as u64).div_ceil(10) * 10).clamp(10, 40_950)),
    };
    let auth = match &i.authentication {
        None => Auth::None,
        Some(a) => match (a.auth_type, &a.auth_pass) {
            (Some(AuthType::Ah), _) => return Err(format!("vrrp_instance {name}: auth_type AH is not supported")),
            (_, Some(p)) if version == Version::V2 => Auth::pass(p),
            (_, Some(_)) => Auth::None, // keepalived ignores authentication in v3 (RFC 5798 §9)
            (_, None) => return Err(format!("vrrp_instance {name}: authentication without auth_pass")),
        },
    };
    let with_len =
        |v: &crate::config::VirtualIp| (v.addr, v.prefix_len.unwrap_or(if v.addr.is_ipv6() { 128 } else { 32 }));
    let vips = i.virtual_ipaddress.iter().map(with_len).collect();
    let excluded = i.virtual_ipaddress_excluded.iter().map(with_len).collect();
    let mcast_group = match ipv6 {
        false => g.vrrp_mcast_group4.unwrap_or(IpAddr::V4(MCAST_V4)),
        true => g.vrrp_mcast_group6.unwrap_or(IpAddr::V6(MCAST_V6)),
    };
    if mcast_group.is_ipv6() != ipv6 || !mcast_group.is_multicast() {
        return Err(format!(
            "vrrp_instance {name}: the VRRP multicast group {mcast_group} is not a multicast address of its family"
        ));
    }
    let mut track_scripts = Vec::new();
    for t in &i.track_script {
        let script = config
            .vrrp_scripts
            .iter()
            .find(|s| s.name == t.name)
            .ok_or_else(|| format!("vrrp_instance {name}: track_script {} names no vrrp_script", t.name))?;
        track_scripts.push((t.name.clone(), t.weight.unwrap_or(script.weight), t.reverse != script.weight_reverse));
    }
    Ok(Spec {
        name: name.clone(),
        interface: i.interface.clone().unwrap_or_else(|| default_interface.to_string()),
        vrid,
        version,
        ipv6,
        priority: i.priority,
        advert_int,
        vips,
        excluded,
        mcast_group,
        auth,
        v4_checksum: if i.v3_checksum_as_v2.unwrap_or(g.v3_checksum_as_v2) {
            V4Checksum::MessageOnly
        } else {
            V4Checksum::PseudoHeader
        },
        unicast_src: i.unicast_src_ip,
        unicast_peers: i.unicast_peers.iter().map(|p| p.addr).collect(),
        peer_ttls: i.unicast_peers.iter().map(|p| (p.addr, p.min_ttl, p.max_ttl)).collect(),
        check_unicast_src: i.check_unicast_src || g.vrrp_check_unicast_src,
        unicast_ttl: i.unicast_ttl.unwrap_or(255),
        mcast_src: i.mcast_src_ip,
        preempt: !i.nopreempt,
        preempt_delay: i.preempt_delay.unwrap_or_default(),
        lower_prio_advert: !i.lower_prio_no_advert.or(g.vrrp_lower_prio_no_advert).unwrap_or(false),
        garp_delay: i.garp_master_delay.or(g.vrrp_garp_master_delay).unwrap_or(Duration::from_secs(5)),
        garp_repeat: i.garp_master_repeat.or(g.vrrp_garp_master_repeat).unwrap_or(5),
        garp_refresh: i.garp_master_refresh.or(g.vrrp_garp_master_refresh).filter(|d| !d.is_zero()),
        garp_refresh_repeat: i.garp_master_refresh_repeat.or(g.vrrp_garp_master_refresh_repeat).unwrap_or(1),
        down_adverts: i.down_timer_adverts.or(g.vrrp_down_timer_adverts).unwrap_or(3).clamp(1, 100),
        track_interfaces: i.track_interface.iter().map(|t| (t.name.clone(), t.weight.unwrap_or(0))).collect(),
        track_scripts,
        dont_track_primary: i.dont_track_primary,
        notify: i.notify.clone(),
        location: i.location.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn specs_of(text: &str) -> Result<Vec<Spec>, Vec<String>> {
        let c = crate::config::parse_str(text, Path::new("k.conf")).expect("parses").config;
        specs(&c, "eth0").map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn keepalived_defaults_and_units() {
        let s = specs_of(
            "vrrp_instance A {\n interface veth0\n virtual_router_id 51\n advert_int 1.4\n\
             authentication {\n auth_type PASS\n auth_pass secret123\n }\n virtual_ipaddress {\n 10.0.0.100\n }\n}\n\
             vrrp_instance B {\n version 3\n virtual_router_id 52\n priority 200\n advert_int 0.05\n nopreempt\n\
             v3_checksum_as_v2\n virtual_ipaddress {\n 10.0.0.101/24\n }\n}\n\
             vrrp_instance C {\n virtual_router_id 53\n virtual_ipaddress {\n fd00::1\n }\n}\n",
        )
        .unwrap();
        let (a, b, c) = (&s[0], &s[1], &s[2]);
        assert_eq!(
            (a.version, a.priority, a.advert_int, a.interval_units()),
            (Version::V2, 100, Duration::from_secs(1), 1)
        );
        assert_eq!(a.auth, Auth::pass("secret12"));
        assert_eq!(a.vips, vec![("10.0.0.100".parse().unwrap(), 32)]);
        assert_eq!((a.interface.as_str(), a.preempt, a.garp_repeat), ("veth0", true, 5));
        assert_eq!(
            (b.version, b.interval_units(), b.preempt, b.v4_checksum),
            (Version::V3, 5, false, V4Checksum::MessageOnly)
        );
        assert_eq!(b.vips[0].1, 24);
        assert_eq!(b.interface, "eth0");
        assert_eq!((c.version, c.ipv6, c.vips[0].1), (Version::V3, true, 128));
        assert_eq!((a.mcast_group, c.mcast_group), (IpAddr::V4(MCAST_V4), IpAddr::V6(MCAST_V6)));
    }

    #[test]
    fn unicast_ttl_bounds_and_source_check() {
        let s = specs_of(
            "vrrp_instance A {\n virtual_router_id 51\n check_unicast_src\n unicast_src_ip 10.0.0.1\n\
             unicast_peer {\n 10.0.0.2 min_ttl 250 max_ttl 255\n 10.0.0.3\n }\n virtual_ipaddress {\n 10.0.0.100\n }\n}\n",
        )
        .unwrap();
        let a = &s[0];
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert_eq!(a.check_unicast(ip("10.0.0.2"), 255), Ok(()));
        assert_eq!(a.check_unicast(ip("10.0.0.2"), 64), Err(super::super::packet::Reject::Ttl(64)));
        assert_eq!(a.check_unicast(ip("10.0.0.3"), 1), Ok(()));
        assert_eq!(a.check_unicast(ip("10.0.0.9"), 255), Err(super::super::packet::Reject::Source));
    }

    #[test]
    fn refusals_name_the_instance_and_place() {
        let e = specs_of(
            "vrrp_instance A {\n virtual_ipaddress {\n 10.0.0.1\n }\n}\n\
             vrrp_instance B {\n virtual_router_id 5\n virtual_ipaddress {\n 10.0.0.2\n }\n}\n\
             vrrp_instance C {\n virtual_router_id 5\n virtual_ipaddress {\n 10.0.0.3\n }\n}\n",
        )
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("k.conf:1:1: vrrp_instance A has no virtual_router_id"), "{e:?}");
        assert!(e[1].starts_with("k.conf:12:1: vrrp_instance C: virtual_router_id 5 is already used on eth0 by vrrp_instance B (k.conf:6:1)"), "{e:?}");
    }

    #[test]
    fn reload_diff_keeps_changes_removes_and_adds() {
        let base = "vrrp_instance A {\n interface eth0\n virtual_router_id 51\n priority 100\n virtual_ipaddress {\n 10.0.0.100\n }\n}\n\
                    vrrp_instance B {\n virtual_router_id 52\n virtual_ipaddress {\n 10.0.0.101\n }\n}\n\
                    vrrp_instance C {\n virtual_router_id 53\n virtual_ipaddress {\n 10.0.0.102\n }\n}\n\
                    vrrp_instance D {\n virtual_router_id 54\n virtual_ipaddress {\n 10.0.0.103\n }\n}\n";
        let old = specs_of(base).unwrap();
        // A: moved down the file (other lines), same settings. B: priority and a VIP more.
        // C: gone. D: another VRID (remove + add). E: new.
        let new = specs_of(
            "vrrp_instance E {\n virtual_router_id 60\n virtual_ipaddress {\n 10.0.0.110\n }\n}\n\
             vrrp_instance B {\n virtual_router_id 52\n priority 120\n virtual_ipaddress {\n 10.0.0.101\n 10.0.0.111\n }\n}\n\
             vrrp_instance D {\n virtual_router_id 55\n virtual_ipaddress {\n 10.0.0.103\n }\n}\n\
             vrrp_instance A {\n interface eth0\n virtual_router_id 51\n priority 100\n virtual_ipaddress {\n 10.0.0.100\n }\n}\n",
        )
        .unwrap();
        let d = diff(&old, &new);
        assert_eq!(d, Diff { unchanged: vec![(0, 3)], changed: vec![(1, 1)], removed: vec![2, 3], added: vec![0, 2] });
        assert_eq!(diff(&old, &old), Diff { unchanged: (0..4).map(|i| (i, i)).collect(), ..Diff::default() });
        assert_eq!(diff(&old, &[]), Diff { removed: vec![0, 1, 2, 3], ..Diff::default() });
        // Another interface or family is another router too.
        let moved = specs_of(&base.replace("interface eth0", "interface eth1")).unwrap();
        assert_eq!((diff(&old, &moved).removed, diff(&old, &moved).added), (vec![0], vec![0]));
        let v6 = specs_of(&base.replace("10.0.0.101", "fd00::101")).unwrap();
        assert_eq!((diff(&old, &v6).removed, diff(&old, &v6).added), (vec![1], vec![1]));
        // Settings that are not the router's identity are changes: auth, peers, notify, preempt.
        for edit in [
            ("virtual_router_id 51\n", "virtual_router_id 51\n authentication {\n auth_type PASS\n auth_pass x\n }\n"),
            ("virtual_router_id 51\n", "virtual_router_id 51\n nopreempt\n"),
            ("virtual_router_id 51\n", "virtual_router_id 51\n notify_master /bin/true\n"),
            ("virtual_router_id 51\n", "virtual_router_id 51\n unicast_peer {\n 10.0.0.9\n }\n"),
        ] {
            let d = diff(&old, &specs_of(&base.replace(edit.0, edit.1)).unwrap());
            assert_eq!((d.changed, d.removed, d.added), (vec![(0, 0)], vec![], vec![]), "{edit:?}");
        }
    }
}
