//! Tests of the full keepalived grammar: includes, every block type, defaults, the operators'
//! guide configs, and keyword coverage.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn ok(text: &str) -> Loaded {
    parse_str(text, Path::new("k.conf")).unwrap_or_else(|e| panic!("{e}"))
}

fn warnings(l: &Loaded) -> Vec<String> {
    l.warnings.iter().map(ToString::to_string).collect()
}

fn errors(text: &str) -> Vec<String> {
    match parse_str(text, Path::new("k.conf")) {
        Ok(l) => panic!("expected errors, got {l:?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lvs-cfg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        Self(dir)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.0.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vs(n: u8) -> String {
    format!("virtual_server 10.0.0.{n} 80 {{\n real_server 10.1.0.{n} 80 {{ weight {n} }}\n}}\n")
}

// ---- include -------------------------------------------------------------------------------

#[test]
fn include_glob_sorted_relative_and_nested() {
    let d = TempDir::new("inc");
    let main = d.write(
        "keepalived.conf",
        "global_defs {\n include defs/*.inc\n}\ninclude conf.d/*.conf\ninclude conf.d/vs-[0-9]?.extra\n",
    );
    d.write("defs/a.inc", "router_id lb1\n");
    d.write("conf.d/b.conf", &vs(2));
    d.write("conf.d/a.conf", &format!("{}include ../more/x.conf\n", vs(1)));
    d.write("conf.d/c.conf.bak", &vs(9));
    d.write("conf.d/vs-12.extra", &vs(4));
    d.write("conf.d/.hidden.conf", &vs(8));
    d.write("more/x.conf", &vs(3));
    let l = load(&main).unwrap_or_else(|e| panic!("{e}"));
    let addrs: Vec<_> = l.config.virtual_servers.iter().map(|v| v.addr).collect();
    assert_eq!(addrs, [ip("10.0.0.1"), ip("10.0.0.3"), ip("10.0.0.2"), ip("10.0.0.4")]);
    assert_eq!(l.config.global_defs.router_id.as_deref(), Some("lb1"));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    // Locations name the included file.
    let x = &l.config.virtual_servers[1];
    assert_eq!(x.location.to_string(), format!("{}:1:1", d.0.join("conf.d/../more/x.conf").display()));
    // parse_str resolves against its `file` argument's directory.
    let l = parse_str("include conf.d/b.conf\n", &d.0.join("virtual.conf")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.config.virtual_servers[0].addr, ip("10.0.0.2"));
    // Absolute patterns work as well.
    let text = format!("include {}/more/*.conf\n", d.0.display());
    assert_eq!(ok(&text).config.virtual_servers.len(), 1);
}

#[test]
fn include_missing_match_is_a_warning() {
    let d = TempDir::new("miss");
    let main = d.write("k.conf", "include nothing/*.conf\ninclude absent.conf\n");
    let l = load(&main).unwrap_or_else(|e| panic!("{e}"));
    let w = warnings(&l);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with(&format!("{}:1:9: include `nothing/*.conf`: no file matches", main.display())), "{w:?}");
    assert!(w[1].contains("include `absent.conf`: no file matches"), "{w:?}");
    let e = errors("include\n");
    assert_eq!(e, ["k.conf:1:1: missing argument for `include`: expected `include PATTERN`"]);
}

#[test]
fn include_loops_are_errors_naming_both_places() {
    let d = TempDir::new("loop");
    let main = d.write("main.conf", "include a.conf\n");
    let a = d.write("a.conf", &format!("{}include b.conf\n", vs(1)));
    let b = d.write("b.conf", "include a.conf\ninclude main.conf\n");
    let e = load(&main).err().map(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>());
    assert_eq!(
        e,
        Some(vec![
            format!(
                "{}:1:9: include loop: `{}` includes `{}` again; it is already being read, included at {}:1:9",
                b.display(),
                b.display(),
                a.display(),
                main.display()
            ),
            format!(
                "{}:2:9: include loop: `{}` includes `{}` again; it is the top-level configuration file",
                b.display(),
                b.display(),
                main.display()
            ),
        ])
    );
    // Including itself.
    let selfish = d.write("self.conf", "include self.conf\n");
    let e = load(&selfish).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("include loop"), "{e}");
}

#[test]
fn errors_in_included_files_name_that_file() {
    let d = TempDir::new("err");
    let main = d.write("main.conf", "virtual_server 10.0.0.1 80 {\n include rs.conf\n}\n");
    let rs = d.write("rs.conf", "real_server 10.0.0.2 80 {\n  weight heavy\n}\n");
    let e = load(&main).err().map(|e| e.to_string());
    assert_eq!(e, Some(format!("{}:2:10: invalid weight `heavy`: expected an integer 0-65535", rs.display())));
    d.write("rs.conf", "real_server 10.0.0.2 80 {\n  frob\n}\n");
    let l = load(&main).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(warnings(&l), [format!("{}:2:3: unknown keyword `frob`; ignored", rs.display())]);
    // An unclosed quote in an included file.
    d.write("rs.conf", "real_server 10.0.0.2 80 { notify_up \"x\n}\n");
    let e = load(&main).err().map(|e| e.to_string());
    assert_eq!(e, Some(format!("{}:1:37: unterminated quoted string", rs.display())));
}

#[test]
fn include_only_at_statement_start_and_bounded() {
    // `include` as an argument is just a word.
    let l = ok("global_defs {\n router_id include\n}\n");
    assert_eq!(l.config.global_defs.router_id.as_deref(), Some("include"));
    // Deep self-recursion through distinct names is capped.
    let d = TempDir::new("deep");
    for i in 0..40 {
        d.write(&format!("f{i:02}.conf"), &format!("include f{:02}.conf\n", i + 1));
    }
    let e = load(&d.0.join("f00.conf")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("includes nested too deeply (limit 16)"), "{e}");
}

// ---- global_defs -----------------------------------------------------------------------------

#[test]
fn global_defs_fields() {
    let l = ok(r#"
global_defs {
  router_id LVS_DEVEL
  notification_email {
    acassen@firewall.loc
    failover@firewall.loc sysadmin@firewall.loc
  }
  notification_email_from Alexandre.Cassen@firewall.loc
  smtp_server 192.168.200.1 2525
  smtp_helo_name lb.example
  smtp_connect_timeout 30
  smtp_alert
  lvs_timeouts tcp 7200 tcpfin 120 udp 300
  lvs_sync_daemon eth1 VI_1 id 7 maxlen 1400 port 8848 ttl 2 group 239.0.0.7
  lvs_flush
  enable_script_security
  script_user keepalived_script nogroup
  dynamic_interfaces
  vrrp_version 3
  vrrp_strict
  vrrp_mcast_group4 224.0.0.19
  vrrp_garp_master_delay 10
  vrrp_garp_master_repeat 2
  vrrp_garp_master_refresh 60.5
  vrrp_garp_interval 0.001
  vrrp_gna_interval 0.000001
  vrrp_skip_check_adv_addr
  vrrp_priority -5
  vrrp_down_timer_adverts 4
  vrrp_check_unicast_src off
}
"#);
    let g = &l.config.global_defs;
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(g.router_id.as_deref(), Some("LVS_DEVEL"));
    assert_eq!(g.notification_email, ["acassen@firewall.loc", "failover@firewall.loc", "sysadmin@firewall.loc"]);
    assert_eq!(g.smtp_server, Some(("192.168.200.1".into(), 2525)));
    assert_eq!(g.smtp_connect_timeout, Some(secs(30.0)));
    assert_eq!(g.lvs_timeouts, Some(LvsTimeouts { tcp: Some(7200), tcp_fin: Some(120), udp: Some(300) }));
    let d = g.lvs_sync_daemon.as_ref().map(|d| (d.interface.as_str(), d.vrrp_instance.as_deref(), d.sync_id, d.group));
    assert_eq!(d, Some(("eth1", Some("VI_1"), Some(7), Some(ip("239.0.0.7")))));
    assert!(g.lvs_flush && g.enable_script_security && g.dynamic_interfaces && g.vrrp_strict);
    assert_eq!(g.script_user, Some(("keepalived_script".into(), Some("nogroup".into()))));
    assert_eq!((g.vrrp_version, g.vrrp_mcast_group4), (Some(3), Some(ip("224.0.0.19"))));
    assert_eq!(g.vrrp_garp_master_refresh, Some(Duration::from_micros(60_500_000)));
    assert_eq!(g.vrrp_garp_interval, Some(Duration::from_millis(1)));
    assert_eq!(g.vrrp_gna_interval, Some(Duration::from_micros(1)));
    assert_eq!((g.vrrp_priority, g.vrrp_down_timer_adverts, g.vrrp_check_unicast_src), (Some(-5), Some(4), false));
    // Partial timeouts; the default smtp port; the deprecated sync daemon keyword.
    let l = ok("global_defs {\n lvs_timeouts udp 10\n smtp_server mail\n lvs_sync_daemon_interface eth2\n}\n");
    let g = &l.config.global_defs;
    assert_eq!(g.lvs_timeouts, Some(LvsTimeouts { tcp: None, tcp_fin: None, udp: Some(10) }));
    assert_eq!(g.smtp_server, Some(("mail".into(), 25)));
    assert_eq!(g.lvs_sync_daemon.as_ref().map(|d| d.interface.as_str()), Some("eth2"));
    assert_eq!(ok("").config.global_defs.lvs_timeouts, None);
}

#[test]
fn global_defs_errors() {
    let e = errors(
        "global_defs {\n lvs_timeouts tcp 0 tcpfin x\n lvs_timeouts sctp 5\n lvs_timeouts udp\n vrrp_version 4\n \
         vrrp_mcast_group4 10.0.0.1\n enable_script_security maybe\n smtp_connect_timeout 1s\n lvs_timeouts\n}\n",
    );
    assert_eq!(
        e,
        [
            "k.conf:2:19: invalid lvs_timeouts tcp `0`: expected an integer 1-2678400 (seconds)",
            "k.conf:2:28: invalid lvs_timeouts tcpfin `x`: expected an integer 1-2678400 (seconds)",
            "k.conf:3:15: invalid lvs_timeouts protocol `sctp`: expected tcp, tcpfin or udp",
            "k.conf:4:15: missing value for `lvs_timeouts udp`: expected SECONDS",
            "k.conf:5:15: invalid vrrp_version `4`: expected 2 or 3",
            "k.conf:6:20: invalid vrrp_mcast_group4 `10.0.0.1`: expected an IPv4 multicast address",
            "k.conf:7:25: invalid enable_script_security `maybe`: expected nothing, or one of on, off, true, false, yes, no",
            "k.conf:8:23: invalid smtp_connect_timeout `1s`: expected a number of seconds such as 3 or 0.5",
            "k.conf:9:2: missing argument for `lvs_timeouts`: expected `lvs_timeouts [tcp SECONDS] [tcpfin SECONDS] [udp SECONDS]`",
        ]
    );
}

// ---- VRRP ------------------------------------------------------------------------------------

const VRRP: &str = r#"
vrrp_script chk_haproxy {
  script "/usr/bin/killall -0 haproxy"
  interval 2
  timeout 3
  weight -20 reverse
  rise 2
  fall 3
  user root wheel
  init_fail
}
vrrp_script chk_min { script /bin/true }
vrrp_instance VI_1 {
  state MASTER
  interface eth0
  virtual_router_id 51
  priority 150
  advert_int 0.5
  nopreempt
  preempt_delay 30
  authentication {
    auth_type PASS
    auth_pass 1111
  }
  virtual_ipaddress {
    192.168.200.16/24 dev eth0 label eth0:1
    192.168.200.17
    fe80::10/64 dev eth1 scope link -nodad
  }
  virtual_ipaddress_excluded {
    10.9.9.9
  }
  unicast_src_ip 10.0.0.1
  unicast_peer {
    10.0.0.2
    10.0.0.3 min_ttl 250 max_ttl 255
  }
  track_interface {
    eth0
    eth1 weight -10
  }
  track_script {
    chk_haproxy
    chk_min weight 5 reverse
  }
  notify_master "/etc/keepalived/notify.sh master"
  notify_backup /etc/keepalived/notify.sh backup
  notify_fault /etc/keepalived/notify.sh fault
  notify_stop /etc/keepalived/notify.sh stop
  notify /etc/keepalived/notify.sh
  garp_master_delay 1
  garp_master_repeat 3
  garp_master_refresh 30
  garp_master_refresh_repeat 2
  version 3
  use_vmac vrrp.51
  native_ipv6
  smtp_alert
  dont_track_primary
  no_accept
}
vrrp_instance VI_2 {
  interface eth0
  virtual_router_id 52
  vrrp_version 2
  virtual_ipaddress {
    10.0.0.100
  }
}
vrrp_sync_group VG_1 {
  group {
    VI_1
    VI_2
  }
  notify_master /bin/m
  notify_backup /bin/b
  notify_fault /bin/f
  notify /bin/any
  smtp_alert
}
"#;

#[test]
fn vrrp_blocks_fields_and_defaults() {
    let l = ok(VRRP);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let [s, s2] = l.config.vrrp_scripts.as_slice() else { panic!("{:?}", l.config.vrrp_scripts) };
    assert_eq!(s.script.as_deref(), Some("/usr/bin/killall -0 haproxy"));
    assert_eq!((s.interval, s.timeout, s.weight, s.weight_reverse), (secs(2.0), Some(secs(3.0)), -20, true));
    assert_eq!((s.rise, s.fall, s.init_fail), (2, 3, true));
    assert_eq!(s.user, Some(("root".into(), Some("wheel".into()))));
    assert_eq!((s2.interval, s2.timeout, s2.weight, s2.rise, s2.fall, s2.init_fail), (secs(1.0), None, 0, 1, 1, false));

    let [v, v2] = l.config.vrrp_instances.as_slice() else { panic!() };
    assert_eq!((v.name.as_str(), v.state, v.interface.as_deref()), ("VI_1", VrrpState::Master, Some("eth0")));
    assert_eq!((v.virtual_router_id, v.priority, v.advert_int), (Some(51), 150, secs(0.5)));
    assert_eq!((v.nopreempt, v.preempt_delay), (true, Some(secs(30.0))));
    assert_eq!(
        v.authentication,
        Some(Authentication { auth_type: Some(AuthType::Pass), auth_pass: Some("1111".into()) })
    );
    let vips: Vec<_> = v
        .virtual_ipaddress
        .iter()
        .map(|a| (a.addr, a.prefix_len, a.dev.as_deref(), a.label.as_deref(), a.scope.as_deref()))
        .collect();
    assert_eq!(
        vips,
        [
            (ip("192.168.200.16"), Some(24), Some("eth0"), Some("eth0:1"), None),
            (ip("192.168.200.17"), None, None, None, None),
            (ip("fe80::10"), Some(64), Some("eth1"), None, Some("link")),
        ]
    );
    assert_eq!(v.virtual_ipaddress[2].options, ["-nodad"]);
    assert_eq!(v.virtual_ipaddress_excluded[0].addr, ip("10.9.9.9"));
    assert_eq!(v.unicast_src_ip, Some(ip("10.0.0.1")));
    assert_eq!(
        v.unicast_peers,
        [
            UnicastPeer { addr: ip("10.0.0.2"), min_ttl: None, max_ttl: None },
            UnicastPeer { addr: ip("10.0.0.3"), min_ttl: Some(250), max_ttl: Some(255) },
        ]
    );
    assert_eq!(
        v.track_interface,
        [
            Track { name: "eth0".into(), weight: None, reverse: false },
            Track { name: "eth1".into(), weight: Some(-10), reverse: false },
        ]
    );
    assert_eq!(v.track_script[1], Track { name: "chk_min".into(), weight: Some(5), reverse: true });
    assert_eq!(v.notify.master.as_deref(), Some("/etc/keepalived/notify.sh master"));
    assert_eq!(v.notify.backup.as_deref(), Some("/etc/keepalived/notify.sh backup"));
    assert_eq!(v.notify.stop.as_deref(), Some("/etc/keepalived/notify.sh stop"));
    assert_eq!(v.notify.any.as_deref(), Some("/etc/keepalived/notify.sh"));
    assert_eq!((v.garp_master_delay, v.garp_master_repeat), (Some(secs(1.0)), Some(3)));
    assert_eq!((v.garp_master_refresh, v.garp_master_refresh_repeat), (Some(secs(30.0)), Some(2)));
    assert_eq!((v.version, v.use_vmac, v.vmac_name.as_deref()), (Some(3), true, Some("vrrp.51")));
    assert_eq!((v.native_ipv6, v.smtp_alert, v.dont_track_primary, v.accept), (true, Some(true), true, Some(false)));
    // Defaults.
    assert_eq!((v2.state, v2.priority, v2.advert_int, v2.nopreempt), (VrrpState::Backup, 100, secs(1.0), false));
    assert_eq!((v2.version, v2.authentication.is_none(), v2.use_vmac), (Some(2), true, false));

    let [g] = l.config.vrrp_sync_groups.as_slice() else { panic!() };
    assert_eq!(g.group, ["VI_1", "VI_2"]);
    assert_eq!(
        (g.notify.master.as_deref(), g.notify.any.as_deref(), g.smtp_alert),
        (Some("/bin/m"), Some("/bin/any"), Some(true))
    );

    // Everything parsed is reported as inactive.
    let inactive: Vec<String> = l.config.inactive_features().iter().map(ToString::to_string).collect();
    assert!(inactive.contains(&"k.conf:13:1: vrrp_instance VI_1 is parsed but VRRP is not implemented yet; its virtual addresses are not managed".to_string()), "{inactive:?}");
    assert_eq!(inactive.len(), 5, "{inactive:?}");
}

#[test]
fn vrrp_errors_and_reference_warnings() {
    let e = errors(
        "vrrp_instance V {\n state LEADER\n virtual_router_id 0\n priority 256\n advert_int 0\n \
         authentication {\n auth_type MD5\n }\n virtual_ipaddress {\n 10.0.0.1/33\n foo\n }\n \
         unicast_peer {\n 10.0.0.2 min_ttl 300\n }\n track_script {\n s weight 300\n }\n preempt_delay 1001\n}\n\
         vrrp_script {\n}\nvrrp_instance X\n",
    );
    assert_eq!(
        e,
        [
            "k.conf:2:8: invalid state `LEADER`: expected MASTER or BACKUP",
            "k.conf:3:20: invalid virtual_router_id `0`: expected an integer 1-255",
            "k.conf:4:11: invalid priority `256`: expected an integer 1-255",
            "k.conf:5:13: invalid advert_int `0`: expected seconds, 0.01 to 255",
            "k.conf:7:12: invalid auth_type `MD5`: expected PASS or AH",
            "k.conf:10:2: invalid prefix length `10.0.0.1/33`: expected ADDRESS/0-32",
            "k.conf:11:2: invalid virtual address `foo`: expected an IPv4 or IPv6 address, optionally with /PREFIX",
            "k.conf:14:19: invalid min_ttl `300`: expected an integer 0-255",
            "k.conf:17:11: invalid weight `300`: expected an integer -253 to 253",
            "k.conf:19:16: invalid preempt_delay `1001`: expected seconds, 0 to 1000",
            "k.conf:21:1: missing argument for `vrrp_script`: expected `vrrp_script NAME { ... }`",
            "k.conf:23:1: `vrrp_instance` needs a `{ ... }` block",
        ]
    );
    let l = ok(
        "vrrp_instance A {\n track_script {\n nope\n }\n auth_pass_x 1\n}\nvrrp_sync_group G {\n group {\n A\n B\n }\n}\n",
    );
    assert_eq!(
        warnings(&l),
        [
            "k.conf:1:1: vrrp_instance A has no virtual_router_id; keepalived would drop the instance",
            "k.conf:1:1: vrrp_instance A: track_script nope is not a defined vrrp_script",
            "k.conf:5:2: unknown keyword `auth_pass_x`; ignored",
            "k.conf:7:1: vrrp_sync_group G: B is not a defined vrrp_instance",
        ]
    );
    let l = ok("vrrp_instance A {\n virtual_router_id 1\n authentication {\n auth_pass 123456789\n }\n}\n");
    assert_eq!(warnings(&l), ["k.conf:4:12: auth_pass is longer than 8 characters; only the first 8 are used"]);
    let auth = l.config.vrrp_instances[0].authentication.as_ref().and_then(|a| a.auth_pass.clone());
    assert_eq!(auth.as_deref(), Some("12345678"));
}

// ---- LVS -------------------------------------------------------------------------------------

#[test]
fn fwmark_group_and_virtual_server_groups() {
    let l = ok(r#"
virtual_server_group WEB {
  10.0.0.1 80
  10.0.0.10-20 443
  10.1.0.0/30 8080
  fd00::1-1f 80
  10.0.0.99
  fwmark 7
  fwmark 8 inet6
}
virtual_server group WEB {
  lb_algo rr
  lb_kind DR
  real_server 192.168.0.1 80 { }
}
virtual_server fwmark 5 {
  ip_family inet6
  real_server fd00::2 {
    weight 2
  }
}
virtual_server 10.0.0.1 80 { }
"#);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let [g] = l.config.virtual_server_groups.as_slice() else { panic!() };
    assert_eq!(g.name, "WEB");
    assert_eq!(
        g.entries,
        [
            VsgEntry::Range { first: ip("10.0.0.1"), last: ip("10.0.0.1"), port: 80 },
            VsgEntry::Range { first: ip("10.0.0.10"), last: ip("10.0.0.20"), port: 443 },
            VsgEntry::Range { first: ip("10.1.0.0"), last: ip("10.1.0.3"), port: 8080 },
            VsgEntry::Range { first: ip("fd00::1"), last: ip("fd00::1f"), port: 80 },
            VsgEntry::Range { first: ip("10.0.0.99"), last: ip("10.0.0.99"), port: 0 },
            VsgEntry::Fwmark { mark: 7, family: None },
            VsgEntry::Fwmark { mark: 8, family: Some(IpFamily::Inet6) },
        ]
    );
    // desired.rs sees only the IP form.
    let targets: Vec<_> = l.config.virtual_servers.iter().map(|v| v.target.clone()).collect();
    assert_eq!(targets, [VsTarget::Addr(ip("10.0.0.1"), 80)]);
    let others: Vec<_> = l.config.other_virtual_servers.iter().map(|v| v.target.to_string()).collect();
    assert_eq!(others, ["group WEB", "fwmark 5"]);
    let fw = &l.config.other_virtual_servers[1];
    assert_eq!((fw.addr, fw.port, fw.ip_family), (ip("0.0.0.0"), 0, Some(IpFamily::Inet6)));
    assert_eq!((fw.real_servers[0].port, fw.real_servers[0].weight), (0, 2));
    let e = errors(
        "virtual_server_group G {\n 10.0.0.5-1 80\n 10.0.0.1 x\n fwmark 0\n fwmark 1 inet7\n}\nvirtual_server fwmark x { }\nvirtual_server group { }\n",
    );
    assert_eq!(
        e,
        [
            "k.conf:2:2: invalid virtual_server_group entry `10.0.0.5-1`: expected an address, a range such as 10.0.0.1-10, or a prefix such as 10.0.0.0/24",
            "k.conf:3:11: invalid port `x`: expected an integer 0-65535",
            "k.conf:4:9: invalid fwmark `0`: expected an integer 1-4294967295",
            "k.conf:5:11: invalid address family `inet7`: expected inet or inet6",
            "k.conf:7:23: invalid fwmark `x`: expected an integer 1-4294967295",
            "k.conf:8:1: missing argument for `virtual_server`: expected `virtual_server group NAME`",
        ]
    );
}

#[test]
fn virtual_and_real_server_options() {
    let l = ok(r#"
virtual_server 10.0.0.1 80 {
  delay_loop 10
  lvs_sched sh sh-port sh-fallback
  lvs_method TUN type gue port 6080 csum
  persistence_engine sip
  ha_suspend
  virtualhost www.example.com
  alpha
  omega
  quorum 3
  hysteresis 1
  quorum_up "/bin/up vs1"
  quorum_down /bin/down
  sorry_server 10.0.0.9 80
  sorry_server_inhibit
  sorry_server_lvs_method DR
  ops
  retry 4
  delay_before_retry 2
  connect_timeout 7
  warmup 0
  inhibit_on_failure
  smtp_alert off
  real_server 10.0.0.2 80 {
    weight 5
    inhibit_on_failure no
    notify_up "/bin/rs up"
    notify_down /bin/rs down
    uthreshold 1000
    lthreshold 10
    lvs_method DR
    connect_timeout 2
    TCP_CHECK { }
  }
}
"#);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let vs = &l.config.virtual_servers[0];
    assert_eq!(
        (vs.scheduler, vs.scheduler_flags.clone()),
        (Scheduler::Sh, vec!["sh-port".to_string(), "sh-fallback".into()])
    );
    assert_eq!(vs.kind, LbKind::Tun);
    assert_eq!(vs.tunnel, Some(Tunnel { kind: "gue".into(), port: Some(6080), checksum: Some("csum".into()) }));
    assert_eq!(
        (vs.persistence_engine.as_deref(), vs.ha_suspend, vs.virtualhost.as_deref()),
        (Some("sip"), true, Some("www.example.com"))
    );
    assert_eq!((vs.alpha, vs.omega, vs.quorum, vs.hysteresis), (true, true, 3, 1));
    assert_eq!((vs.quorum_up.as_deref(), vs.quorum_down.as_deref()), (Some("/bin/up vs1"), Some("/bin/down")));
    assert_eq!(
        (vs.sorry_server_inhibit, vs.sorry_server_lvs_method, vs.one_packet_scheduler),
        (true, Some(LbKind::Dr), true)
    );
    assert_eq!((vs.inhibit_on_failure, vs.smtp_alert, vs.delay_loop), (true, Some(false), Some(10)));
    let rs = &vs.real_servers[0];
    assert_eq!(
        (rs.weight, rs.inhibit_on_failure, rs.uthreshold, rs.lthreshold),
        (5, Some(false), Some(1000), Some(10))
    );
    assert_eq!((rs.notify_up.as_deref(), rs.notify_down.as_deref()), (Some("/bin/rs up"), Some("/bin/rs down")));
    assert_eq!(rs.lvs_method, Some(LbKind::Dr));
    // Timing: checker, then real server, then virtual server, then keepalived's default.
    let t = rs.checkers[0].timing(rs, vs);
    assert_eq!(
        t,
        CheckTiming {
            connect_timeout: secs(2.0),
            retry: 4,
            delay_before_retry: secs(2.0),
            delay_loop: secs(10.0),
            warmup: Some(Duration::ZERO),
        }
    );
    // Defaults of a bare virtual server.
    let l = ok("virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  TCP_CHECK\n }\n}\n");
    let vs = &l.config.virtual_servers[0];
    assert_eq!(
        (vs.quorum, vs.hysteresis, vs.alpha, vs.inhibit_on_failure, vs.tunnel.is_none()),
        (1, 0, false, false, true)
    );
    let rs = &vs.real_servers[0];
    assert_eq!((rs.weight, rs.inhibit_on_failure, rs.checkers.len()), (1, None, 1));
    assert_eq!(
        rs.checkers[0].timing(rs, vs),
        CheckTiming {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry: 1,
            delay_before_retry: secs(1.0),
            delay_loop: DEFAULT_DELAY_LOOP,
            warmup: None,
        }
    );
}

#[test]
fn checkers_and_their_defaults() {
    let l = ok(r#"
virtual_server 10.0.0.1 443 {
  real_server 10.0.0.2 443 {
    TCP_CHECK {
      connect_ip 10.0.0.20
      connect_port 8443
      bindto 10.0.0.1
      bind_port 4000
      bind_if eth0
      connect_timeout 3
      nb_get_retry 3
      delay_before_retry 3
      warmup 5
      delay_loop 6
      fwmark 9
      alpha
      log_all_failures
    }
    HTTP_GET {
      url {
        path /health
        digest 9B3A0C85A887A256D6939DA88AABD8CD
        status_code 200-299 301,302
        virtualhost api.example
      }
      url {
        path /
      }
      http_protocol 1.1
      virtualhost www.example
      fast_recovery
    }
    SSL_GET {
      url {
        path /s
        status_code 200
      }
      enable_sni
      sni_name s.example
      tls_compliant
    }
    MISC_CHECK {
      misc_path "/usr/local/bin/check.sh 10.0.0.2"
      misc_timeout 30
      misc_dynamic
      user nobody
    }
    SMTP_CHECK {
      helo_name mx.example
      host {
        connect_ip 10.0.0.3
        connect_port 25
      }
    }
    DNS_CHECK {
      type A
      name www.example.
    }
    DNS_CHECK { }
    UDP_CHECK {
      payload 0a0B
      require_reply 0aXX
      min_reply_length 2
      max_reply_length 100
    }
    PING_CHECK { }
  }
}
SSL {
  password secret
  ca /etc/ca.pem
  certificate /etc/c.pem
  key /etc/k.pem
}
"#);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let vs = &l.config.virtual_servers[0];
    let rs = &vs.real_servers[0];
    let kinds: Vec<_> = rs.checkers.iter().map(|c| c.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "TCP_CHECK",
            "HTTP_GET",
            "SSL_GET",
            "MISC_CHECK",
            "SMTP_CHECK",
            "DNS_CHECK",
            "DNS_CHECK",
            "UDP_CHECK",
            "PING_CHECK"
        ]
    );
    let tcp = &rs.checkers[0];
    assert_eq!(
        (tcp.connect_ip, tcp.connect_port, tcp.bindto, tcp.bind_port),
        (Some(ip("10.0.0.20")), Some(8443), Some(ip("10.0.0.1")), Some(4000))
    );
    assert_eq!(
        (tcp.bind_if.as_deref(), tcp.fwmark, tcp.alpha, tcp.log_all_failures),
        (Some("eth0"), Some(9), Some(true), Some(true))
    );
    assert_eq!(
        tcp.timing(rs, vs),
        CheckTiming {
            connect_timeout: secs(3.0),
            retry: 3,
            delay_before_retry: secs(3.0),
            delay_loop: secs(6.0),
            warmup: Some(secs(5.0))
        }
    );
    let CheckKind::Http(h) = &rs.checkers[1].kind else { panic!() };
    assert_eq!(h.urls[0].path.as_deref(), Some("/health"));
    assert_eq!(h.urls[0].digest.as_deref(), Some("9b3a0c85a887a256d6939da88aabd8cd"));
    assert_eq!(h.urls[0].status_codes, [(200, 299), (301, 301), (302, 302)]);
    assert_eq!(h.urls[0].virtualhost.as_deref(), Some("api.example"));
    assert!(h.urls[0].accepts_status(302) && !h.urls[0].accepts_status(404));
    assert!(h.urls[1].accepts_status(204) && !h.urls[1].accepts_status(301), "default 200-299");
    assert_eq!(
        (h.http_protocol.as_deref(), h.virtualhost.as_deref(), h.fast_recovery),
        (Some("1.1"), Some("www.example"), Some(true))
    );
    // HTTP's default delay_before_retry is 3 s.
    assert_eq!(rs.checkers[1].timing(rs, vs).delay_before_retry, secs(3.0));
    let CheckKind::Ssl(s) = &rs.checkers[2].kind else { panic!() };
    assert_eq!((s.enable_sni, s.sni_name.as_deref(), s.tls_compliant), (Some(true), Some("s.example"), Some(true)));
    assert_eq!(s.urls[0].status_codes, [(200, 200)]);
    let CheckKind::Misc(m) = &rs.checkers[3].kind else { panic!() };
    assert_eq!(
        (m.path.as_deref(), m.timeout, m.dynamic),
        (Some("/usr/local/bin/check.sh 10.0.0.2"), Some(secs(30.0)), true)
    );
    assert_eq!(m.user, Some(("nobody".into(), None)));
    let mt = rs.checkers[3].timing(rs, vs);
    assert_eq!((mt.connect_timeout, mt.retry), (secs(30.0), 0), "misc_timeout; MISC retry default 0");
    let CheckKind::Smtp(sm) = &rs.checkers[4].kind else { panic!() };
    assert_eq!((sm.helo_name.as_deref(), sm.hosts.len()), (Some("mx.example"), 1));
    assert_eq!((sm.hosts[0].connect_ip, sm.hosts[0].connect_port), (Some(ip("10.0.0.3")), Some(25)));
    let CheckKind::Dns(d) = &rs.checkers[5].kind else { panic!() };
    assert_eq!((d.query_type, d.name.as_str()), (DnsType::A, "www.example."));
    let CheckKind::Dns(d) = &rs.checkers[6].kind else { panic!() };
    assert_eq!((d.query_type, d.name.as_str()), (DnsType::Soa, "."));
    let dt = rs.checkers[6].timing(rs, vs);
    assert_eq!((dt.retry, dt.delay_before_retry), (3, DEFAULT_DELAY_LOOP), "DNS defaults");
    let CheckKind::Udp(u) = &rs.checkers[7].kind else { panic!() };
    assert_eq!(u.payload, Some(vec![0x0a, 0x0b]));
    assert_eq!((u.require_reply, u.reply_pattern.as_deref()), (true, Some("0aXX")));
    assert_eq!((u.min_reply_length, u.max_reply_length), (Some(2), Some(100)));
    assert_eq!(
        l.config.ssl,
        Some(SslConfig {
            password: Some("secret".into()),
            ca: Some("/etc/ca.pem".into()),
            certificate: Some("/etc/c.pem".into()),
            key: Some("/etc/k.pem".into())
        })
    );
    // The checkers of a served virtual server run: nothing is inactive.
    assert_eq!(l.config.inactive_features(), []);
}

#[test]
fn checker_errors() {
    let e = errors(
        "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  HTTP_GET {\n   url {\n    digest xyz\n    status_code 200-199 abc 600\n   }\n   http_protocol 2\n   connect_port 70000\n  }\n  \
         DNS_CHECK { type PTR }\n  UDP_CHECK { payload abc\n require_reply zz }\n  MISC_CHECK { misc_timeout 3 }\n  TCP_CHECK { connect_timeout -1\n retry x }\n }\n}\n",
    );
    assert_eq!(
        e,
        [
            "k.conf:5:12: invalid digest `xyz`: expected an MD5 digest of 32 hex digits",
            "k.conf:6:17: invalid status_code `200-199`: expected HTTP status codes 100-599 or ranges such as 200-299",
            "k.conf:6:25: invalid status_code `abc`: expected HTTP status codes 100-599 or ranges such as 200-299",
            "k.conf:6:29: invalid status_code `600`: expected HTTP status codes 100-599 or ranges such as 200-299",
            "k.conf:8:18: invalid http_protocol `2`: expected 1.0, 1.0C or 1.1",
            "k.conf:9:17: invalid port `70000`: expected an integer 0-65535",
            "k.conf:11:20: invalid type `PTR`: expected A, NS, CNAME, SOA, MX, TXT or AAAA",
            "k.conf:12:23: invalid payload `abc`: expected an even number of hex digits",
            "k.conf:13:16: invalid require_reply `zz`: expected hex digits, with X for any digit",
            "k.conf:14:3: MISC_CHECK needs `misc_path COMMAND`",
            "k.conf:15:31: invalid connect_timeout `-1`: expected a number of seconds such as 3 or 0.5",
            "k.conf:16:8: invalid retry `x`: expected an integer 0-4294967295",
        ]
    );
}

// ---- the operators' guides (../shared/seeds) --------------------------------------------------

/// 000: keepalived + LVS-DR for 6443, in mod.rs's SEED; 004: the CSDN guide (comments kept as
/// written, `nat_mask` is not a keepalived keyword and is warned about).
const SEED_004: &str = "! Configuration File for keepalived #!表示注释
global_defs { #全局定义部分
notification_email {              #设置警报邮箱
acassen@firewall.loc      #接收警报的邮箱地址，根据实际情况写
failover@firewall.loc
sysadmin@firewall.loc
}
notification_email_from Alexandre.Cassen@firewall.loc #设置发件人地址
smtp_server 192.168.200.1    #设置smtp server地址，即发邮件服务器
smtp_connect_timeout 30   #设置smtp超时连接时间，以上参数可以不配置
router_id m_director   #表示运行keepalived服务器的一个标识
}
vrrp_instance lvs-dr { #定义一个实例
state MASTER  #MASTER表示指定本节点为主节点
interface ens33    #绑定虚拟 IP 的网络接口
virtual_router_id 51  #虚拟路由ID标识
priority 100    #节点的优先级（1-254之间）
advert_int 1   #为同步通知间隔
authentication {  #设置验证信息
auth_type PASS
auth_pass 1111
}
virtual_ipaddress {    #指定虚拟 IP, 两个节点设置必须一样
172.16.16.172
}
}
virtual_server 172.16.16.172 80 {    #设置虚拟服务器,指定虚拟IP和端口
delay_loop 6            #健康检查时间为6秒
lb_algo rr             #设置负载调度算法为rr算法
lb_kind DR         #设置负载均衡模式
nat_mask 255.255.255.0   #非NAT模式注释掉此行  注释用!号
persistence_timeout 50  #连接保持时间，单位是秒。
protocol TCP   #指定转发协议类型，有TCP和UDP两种
real_server 172.16.16.177 80 { #配置RS节点1
weight 1    ##权重
TCP_CHECK {     #节点健康检查。
connect_timeout 3       #超时时间，表示3秒无响应超时。
nb_get_retry 3          #表示重试次数
delay_before_retry 3    #表示重试间隔
connect_port 80         #检测端口，利用80端口检查
}
}
real_server 172.16.16.178 80 {   #RS节点2
weight 1
HTTP_GET {
url {
path /index.html
status_code 200 #http://172.16.16.177/index.html的返回状态码
}
connect_timeout 3
nb_get_retry 3
delay_before_retry 3
}
}
real_server 172.16.16.179 80 {
weight 100
MISC_CHECK {
misc_path \"/opt/mytools/check_web.sh 172.16.16.177\"  #脚本名，需全路径
misc_timeout 30   #脚本执行的超时时间
misc_dynamic          #动态调整服务器的权重
}
}
}
";

/// 001: keepalived + redis, route1 (the guide's one-line text reflowed, `misc_path` given).
const SEED_001: &str = "! Configuration File for keepalived
global_defs {
notification_email { ops@example.com }
notification_email_from lb@example.com
smtp_server 192.168.0.1
smtp_connect_timeout 30
router_id LVS_DEVEL
}
vrrp_instance VI_1 { state MASTER
interface eth1
virtual_router_id 100
priority 150
advert_int 1
authentication { auth_type PASS
auth_pass 1111 }
virtual_ipaddress { 192.168.0.7 } }
vrrp_instance VI_2 { state BACKUP
interface eth1
virtual_router_id 101
priority 101
advert_int 1
authentication { auth_type PASS
auth_pass 1111 }
virtual_ipaddress { 192.168.0.8 } }
virtual_server 192.168.0.7 6379 { delay_loop 3
lb_algo rr
lb_kind DR
persistence_timeout 15
protocol TCP
real_server 192.168.0.4 6379 { weight 4
notify_up /home/wind/redis_up.sh
MISC_CHECK { misc_path /home/wind/redis_check.sh
misc_timeout 5 } }
real_server 192.168.0.2 6379 { weight 3
notify_up /home/wind/redis_up.sh
MISC_CHECK { misc_path /home/wind/redis_check.sh
misc_timeout 5 } } }
virtual_server 192.168.0.8 6379 { delay_loop 3
lb_algo wrr
lb_kind DR
persistence_timeout 30
protocol TCP
real_server 192.168.0.2 6379 { weight 8
TCP_CHECK { connect_timeout 10
nb_get_retry 3
delay_before_retry 3
connect_port 6379 } }
real_server 192.168.0.3 6379 { weight 2
TCP_CHECK { connect_timeout 10 } } }
";

#[test]
fn operator_guide_configs_parse() {
    let l = ok(SEED_004);
    assert_eq!(warnings(&l), ["k.conf:31:1: unknown keyword `nat_mask`; ignored"]);
    let c = &l.config;
    assert_eq!(c.global_defs.notification_email.len(), 3);
    assert_eq!(c.global_defs.router_id.as_deref(), Some("m_director"));
    assert_eq!(c.vrrp_instances[0].virtual_ipaddress[0].addr, ip("172.16.16.172"));
    let vs = &c.virtual_servers[0];
    assert_eq!((vs.scheduler, vs.kind, vs.persistence_timeout), (Scheduler::Rr, LbKind::Dr, Some(50)));
    let rs = &vs.real_servers;
    assert_eq!(rs[0].checkers[0].timing(&rs[0], vs).retry, 3);
    assert_eq!(rs[0].checkers[0].connect_port, Some(80));
    let CheckKind::Misc(m) = &rs[2].checkers[0].kind else { panic!() };
    assert_eq!(m.path.as_deref(), Some("/opt/mytools/check_web.sh 172.16.16.177"));
    assert!(m.dynamic);

    // On one line, a keyword's value and the `}` closing its block.
    let l = ok(SEED_001);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = &l.config;
    assert_eq!(c.vrrp_instances.iter().map(|v| v.virtual_router_id).collect::<Vec<_>>(), [Some(100), Some(101)]);
    assert_eq!(c.vrrp_instances[1].virtual_ipaddress[0].addr, ip("192.168.0.8"));
    assert_eq!(c.virtual_servers.len(), 2);
    assert_eq!(c.virtual_servers[0].real_servers[0].notify_up.as_deref(), Some("/home/wind/redis_up.sh"));
    assert_eq!(c.virtual_servers[1].real_servers[1].checkers.len(), 1);
}

// ---- keyword coverage ------------------------------------------------------------------------

/// Every keyword the notes list (global, VRRP, LVS, checkers, deprecated aliases) is accepted
/// into the typed model without an "unknown keyword" or "not supported" warning.
const ALL_KEYWORDS: &str = r#"
global_defs {
  router_id r
  notification_email { a@b }
  notification_email_from a@b
  smtp_server 10.0.0.1
  smtp_helo_name h
  smtp_connect_timeout 5
  smtp_alert
  smtp_alert_vrrp
  smtp_alert_checker
  no_email_faults
  lvs_timeouts tcp 1 tcpfin 2 udp 3
  lvs_sync_daemon eth0 VI id 1
  lvs_sync_daemon_interface eth0
  lvs_flush
  lvs_flush_on_stop
  enable_script_security
  script_user root
  dynamic_interfaces
  notify_fifo /run/f
  vrrp_notify_fifo /run/v
  lvs_notify_fifo /run/l
  checker_log_all_failures
  vrrp_version 2
  vrrp_strict
  vrrp_mcast_group4 224.0.0.18
  vrrp_mcast_group6 ff02::12
  vrrp_garp_master_delay 5
  vrrp_garp_master_repeat 5
  vrrp_garp_master_refresh 0
  vrrp_garp_master_refresh_repeat 1
  vrrp_garp_lower_prio_delay 5
  vrrp_garp_lower_prio_repeat 5
  vrrp_garp_interval 0
  vrrp_gna_interval 0
  vrrp_min_garp
  vrrp_check_unicast_src
  vrrp_skip_check_adv_addr
  vrrp_lower_prio_no_advert
  vrrp_higher_prio_send_advert
  vrrp_priority 0
  vrrp_no_swap
  vrrp_startup_delay 1
  vrrp_down_timer_adverts 3
  v3_checksum_as_v2
}
vrrp_script S {
  script /bin/true
  interval 1
  timeout 1
  weight 1
  rise 1
  fall 1
  user root
  init_fail
}
vrrp_instance VI {
  state BACKUP
  interface eth0
  virtual_router_id 1
  priority 1
  advert_int 1
  nopreempt
  preempt
  preempt_delay 0
  authentication {
    auth_type AH
    auth_pass x
  }
  virtual_ipaddress { 10.0.0.1 }
  virtual_ipaddress_excluded { 10.0.0.2 }
  unicast_src_ip 10.0.0.3
  unicast_peer { 10.0.0.4 }
  unicast_ttl 255
  mcast_src_ip 10.0.0.3
  track_interface { eth0 }
  track_script { S }
  dont_track_primary
  notify_master /n
  notify_backup /n
  notify_fault /n
  notify_stop /n
  notify_deleted /n
  notify_master_rx_lower_pri /n
  notify /n
  smtp_alert
  garp_master_delay 1
  garp_master_repeat 1
  garp_master_refresh 1
  garp_master_refresh_repeat 1
  garp_lower_prio_delay 1
  garp_lower_prio_repeat 1
  version 2
  vrrp_version 2
  use_vmac
  vmac_xmit_base
  native_ipv6
  accept
  no_accept
  strict_mode
  check_unicast_src
  skip_check_adv_addr
  lower_prio_no_advert
  higher_prio_send_advert
  down_timer_adverts 3
  v3_checksum_as_v2
  promote_secondaries
}
vrrp_sync_group G {
  group { VI }
  notify_master /n
  notify_backup /n
  notify_fault /n
  notify_stop /n
  notify /n
  smtp_alert
  track_interface { eth0 }
  track_script { S }
  sync_group_tracking_weight
  global_tracking
}
virtual_server_group VSG {
  10.0.0.1 80
  fwmark 1
}
virtual_server group VSG { real_server 10.0.0.9 80 { } }
virtual_server fwmark 1 { real_server 10.0.0.9 { } }
virtual_server 10.0.0.1 80 {
  delay_loop 1
  lb_algo rr
  lvs_sched rr hashed
  lb_kind DR
  lvs_method DR
  persistence_timeout 1
  persistence_granularity 255.255.255.255
  persistence_engine sip
  protocol TCP
  sorry_server 10.0.0.2 80
  sorry_server_inhibit
  sorry_server_lvs_method DR
  ha_suspend
  virtualhost v
  alpha
  omega
  quorum 1
  hysteresis 0
  quorum_up /u
  quorum_down /d
  ops
  one_packet_scheduler
  ip_family inet
  retry 1
  delay_before_retry 1
  connect_timeout 1
  warmup 1
  inhibit_on_failure
  smtp_alert
  snmp_name n
  sh-port
  real_server 10.0.0.3 80 {
    weight 1
    inhibit_on_failure
    notify_up /u
    notify_down /d
    uthreshold 1
    lthreshold 1
    lvs_method DR
    alpha
    smtp_alert
    virtualhost v
    retry 1
    delay_before_retry 1
    connect_timeout 1
    warmup 1
    delay_loop 1
    TCP_CHECK {
      connect_ip 10.0.0.3
      connect_port 80
      bindto 10.0.0.1
      bind_if eth0
      bind_port 1
      fwmark 1
      connect_timeout 1
      retry 1
      nb_get_retry 1
      delay_before_retry 1
      warmup 1
      delay_loop 1
      alpha
      log_all_failures
    }
    HTTP_GET {
      url {
        path /
        digest 00000000000000000000000000000000
        status_code 200
        virtualhost v
        regex x
        regex_no_match
      }
      http_protocol 1.0C
      virtualhost v
      fast_recovery
      enable_sni
      sni_name n
      tls_compliant
    }
    SSL_GET { url { path / } }
    MISC_CHECK {
      misc_path /x
      misc_timeout 1
      misc_dynamic
      user root
    }
    SMTP_CHECK {
      helo_name h
      host { connect_ip 10.0.0.3 }
    }
    DNS_CHECK {
      type AAAA
      name n
    }
    UDP_CHECK {
      payload 00
      require_reply
      min_reply_length 1
      max_reply_length 2
    }
    PING_CHECK
  }
}
SSL {
  password p
  ca c
  certificate c
  key k
}
"#;

#[test]
fn every_listed_keyword_is_understood() {
    let l = ok(ALL_KEYWORDS);
    assert!(l.warnings.is_empty(), "{:#?}", l.warnings);
    assert_eq!(l.config.vrrp_instances.len(), 1);
    assert_eq!(l.config.other_virtual_servers.len(), 2);
    assert_eq!(l.config.virtual_servers[0].real_servers[0].checkers.len(), 8);
}
