//! keepalived.conf reader: lexer -> generic tree -> typed `virtual_server` model.

pub mod include;
pub mod lexer;
mod lower;
mod model;
#[cfg(test)]
mod tests_full;
pub mod tree;

use std::path::Path;
use std::sync::Arc;

pub use model::{
    AuthType, Authentication, CheckDefaults, CheckKind, CheckTiming, Checker, Config, ConfigErrors,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DELAY_LOOP, Diagnostic, DnsCheck, DnsType, GlobalDefs, HttpCheck, IpFamily,
    LbKind, Loaded, Location, LvsSyncDaemon, LvsTimeouts, MiscCheck, Notify, Protocol, RealServer, Scheduler,
    SmtpCheck, SslConfig, Track, Tunnel, UdpCheck, UnicastPeer, Url, VirtualIp, VirtualServer, VirtualServerGroup,
    VrrpInstance, VrrpScript, VrrpState, VrrpSyncGroup, VsTarget, VsgEntry,
};

pub const DEFAULT_PATH: &str = "/etc/keepalived/keepalived.conf";

/// Reads and parses `path`. Invalid UTF-8 is replaced rather than rejected,
/// since keepalived itself is byte-oriented (comments may be Latin-1).
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    match std::fs::read(path) {
        Ok(bytes) => parse_str(&String::from_utf8_lossy(&bytes), path),
        Err(e) => Err(ConfigErrors(vec![Diagnostic {
            location: Location { file: Arc::from(path), line: 0, column: 0 },
            message: format!("cannot read config: {e}"),
        }])),
    }
}

/// Parses config text. `file` names it in diagnostics and anchors relative `include`
/// patterns (resolved against its directory, as keepalived does). On error, every error found
/// is returned (sorted by file, then position) and warnings are dropped.
pub fn parse_str(text: &str, file: &Path) -> Result<Loaded, ConfigErrors> {
    let file: Arc<Path> = Arc::from(file);
    // Tokens stream from the lexer through include expansion into the tree builder: no
    // token list is held (a 10,000-service config is a million tokens).
    let mut builder = tree::Builder::default();
    // Files in the order they were read: the top-level file first.
    let mut order: Vec<Arc<Path>> = vec![Arc::clone(&file)];
    let (mut errors, mut include_warnings) = include::expand(text, &file, &mut |t| {
        if !order.last().is_some_and(|f| Arc::ptr_eq(f, &t.file)) && !order.contains(&t.file) {
            order.push(Arc::clone(&t.file));
        }
        builder.push(t);
    });
    let (nodes, tree_errors) = builder.finish();
    errors.extend(tree_errors);
    let (config, model_errors, warnings) = lower::lower(&nodes);
    drop(nodes);
    errors.extend(model_errors);
    let key = |d: &Diagnostic| {
        let index = order.iter().position(|f| **f == *d.location.file).unwrap_or(usize::MAX);
        (index, d.location.line, d.location.column)
    };
    if errors.is_empty() {
        include_warnings.extend(warnings);
        let mut warnings = include_warnings;
        warnings.sort_by_key(key);
        Ok(Loaded { config, warnings })
    } else {
        errors.sort_by_key(key);
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const SEED: &str = "! Configuration File for keepalived
global_defs {
router_id lvs1
}
vrrp_instance VI_1 {
state MASTER
interface ens33
virtual_router_id 100
priority 100
advert_int 1
authentication {
auth_type PASS
auth_pass 1111
}
virtual_ipaddress {
192.168.50.149
}
}
virtual_server 192.168.50.149 6443 {
delay_loop 6
lb_algo wrr
lb_kind DR
persistence_timeout 50
protocol TCP
real_server 192.168.50.121 6443 {
weight 1
TCP_CHECK {
connect_timeout 10
retry 3
delay_before_retry 3
connect_port 6443
}
}
real_server 192.168.50.122 6443 {
weight 1
TCP_CHECK {
connect_timeout 10
}
}
}
";

    fn ok(text: &str) -> Loaded {
        parse_str(text, Path::new("keepalived.conf")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn warnings(text: &str) -> Vec<String> {
        ok(text).warnings.iter().map(ToString::to_string).collect()
    }

    fn errors(text: &str) -> Vec<String> {
        match parse_str(text, Path::new("keepalived.conf")) {
            Ok(l) => panic!("expected errors, got {l:?}"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn seed_config() {
        let loaded = ok(SEED);
        let [vs] = loaded.config.virtual_servers.as_slice() else { panic!("{loaded:?}") };
        assert_eq!((vs.addr, vs.port), (ip("192.168.50.149"), 6443));
        assert_eq!((vs.protocol, vs.scheduler, vs.kind), (Protocol::Tcp, Scheduler::Wrr, LbKind::Dr));
        assert_eq!((vs.persistence_timeout, vs.delay_loop), (Some(50), Some(6)));
        assert_eq!(vs.location.to_string(), "keepalived.conf:19:1");
        let rs: Vec<_> = vs.real_servers.iter().map(|r| (r.addr, r.port, r.weight, r.location.line)).collect();
        assert_eq!(rs, [(ip("192.168.50.121"), 6443, 1, 25), (ip("192.168.50.122"), 6443, 1, 34)]);
        assert_eq!(warnings(SEED), Vec::<String>::new());
        let checks: Vec<_> = vs.real_servers.iter().map(|r| r.checkers.len()).collect();
        assert_eq!(checks, [1, 1]);
    }

    #[test]
    fn defaults_ipv6_and_one_line_blocks() {
        let l = ok("virtual_server 2001:db8::1 80 { real_server 2001:db8::2 8080 }\n");
        let vs = &l.config.virtual_servers[0];
        assert_eq!(
            (vs.addr, vs.protocol, vs.scheduler, vs.kind),
            (ip("2001:db8::1"), Protocol::Tcp, Scheduler::Wlc, LbKind::Nat)
        );
        assert_eq!((vs.persistence_timeout, vs.delay_loop, vs.sorry_server.is_none()), (None, None, true));
        assert_eq!((vs.real_servers[0].port, vs.real_servers[0].weight), (8080, 1));
        assert_eq!(vs.scheduler.name(), "wlc");
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn all_supported_keywords() {
        let l = ok(r#"
virtual_server 10.0.0.1 53
{   # brace on its own line
  lvs_sched MH
  lvs_method tun
  protocol udp
  persistence_timeout
  persistence_granularity 255.255.255.0
  sorry_server 10.0.0.9 53
  real_server 10.0.0.2 53 { weight 65535 }
  real_server "10.0.0.3" 53 { weight 0 ; }
}
virtual_server 10.0.0.1 53 { protocol SCTP }
virtual_server fe80::1 53 { persistence_granularity 64 }
"#);
        let vs = &l.config.virtual_servers;
        assert_eq!((vs[0].scheduler, vs[0].kind, vs[0].protocol), (Scheduler::Mh, LbKind::Tun, Protocol::Udp));
        assert_eq!(vs[0].persistence_timeout, Some(360));
        assert_eq!(vs[0].persistence_granularity.as_deref(), Some("255.255.255.0"));
        assert_eq!(vs[0].sorry_server, Some((ip("10.0.0.9"), 53)));
        assert_eq!(vs[0].real_servers.iter().map(|r| r.weight).collect::<Vec<_>>(), [65535, 0]);
        assert_eq!(vs[1].protocol, Protocol::Sctp);
        assert_eq!(vs[2].persistence_granularity.as_deref(), Some("64"));
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings); // the `;` value line
        for s in Scheduler::ALL {
            let text = format!("virtual_server 1.1.1.1 1 {{ lb_algo {} }}", s.name().to_uppercase());
            assert_eq!(ok(&text).config.virtual_servers[0].scheduler, s);
        }
    }

    #[test]
    fn unsupported_and_unknown_are_warnings() {
        let w = warnings(
            "virtual_server fwmark 1 { x }\nvirtual_server group G {\n}\nvrrp_script s { }\nfoo bar\n\
             virtual_server 1.1.1.1 1 {\n quorum 2\n bogus\n real_server 2.2.2.2 1 {\n  HTTP_GET { url { path / } }\n  zap\n }\n}\n",
        );
        assert_eq!(
            w,
            [
                "keepalived.conf:1:27: unknown keyword `x`; ignored",
                "keepalived.conf:2:1: virtual_server group G: no virtual_server_group G is defined",
                "keepalived.conf:5:1: unknown keyword `foo`; ignored",
                "keepalived.conf:8:2: unknown keyword `bogus`; ignored",
                "keepalived.conf:11:3: unknown keyword `zap`; ignored",
            ]
        );
        let w =
            warnings("static_routes {\n}\nvirtual_server 1.1.1.1 1 {\n real_server 2.2.2.2 1 { BFD_CHECK { } }\n}\n");
        assert_eq!(
            w,
            [
                "keepalived.conf:1:1: `static_routes` is not supported yet; block ignored",
                "keepalived.conf:4:26: `BFD_CHECK` is not supported yet; ignored",
            ]
        );
    }

    #[test]
    fn malformed_values_are_all_reported() {
        let e = errors(
            "virtual_server 10.0.0.1 80x {\n lb_algo fast\n lb_kind FOO\n protocol ICMP\n\
             persistence_timeout -1\n delay_loop 1.5\n persistence_granularity 255.0.255.0\n\
             real_server 10.0.0.2\n real_server 10.0.0.300 80 { weight 70000 }\n sorry_server x 1\n}\n\
             virtual_server 10.0.0.1 0 { }\nvirtual_server 10.0.0.5 81\nvirtual_server 2001::1 80 { persistence_granularity 255.255.0.0 }\n\
             virtual_server\n",
        );
        assert_eq!(
            e,
            [
                "keepalived.conf:1:25: invalid port `80x`: expected an integer 0-65535",
                "keepalived.conf:2:10: invalid lb_algo `fast`: expected one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos",
                "keepalived.conf:3:10: invalid lb_kind `FOO`: expected DR, NAT or TUN",
                "keepalived.conf:4:11: invalid protocol `ICMP`: expected TCP, UDP or SCTP",
                "keepalived.conf:5:21: invalid persistence_timeout `-1`: expected an integer 0-4294967295",
                "keepalived.conf:6:13: invalid delay_loop `1.5`: expected an integer 0-4294967295",
                "keepalived.conf:7:26: invalid persistence_granularity `255.0.255.0`: expected an IPv4 netmask or an IPv6 prefix length",
                "keepalived.conf:8:1: missing argument for `real_server`: expected `real_server IP PORT`",
                "keepalived.conf:9:14: invalid IP address `10.0.0.300`: expected an IPv4 or IPv6 address",
                "keepalived.conf:9:37: invalid weight `70000`: expected an integer 0-65535",
                "keepalived.conf:10:15: invalid IP address `x`: expected an IPv4 or IPv6 address",
                "keepalived.conf:12:25: port 0 (all ports) is not supported",
                "keepalived.conf:13:1: `virtual_server` needs a `{ ... }` block",
                "keepalived.conf:14:53: invalid persistence_granularity `255.255.0.0`: expected an IPv6 prefix length 1-128",
                "keepalived.conf:15:1: missing argument for `virtual_server`: expected `virtual_server IP PORT`",
                "keepalived.conf:15:1: `virtual_server` needs a `{ ... }` block",
            ]
        );
    }

    #[test]
    fn duplicates() {
        let e = errors(
            "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80\n real_server 10.0.0.2 80\n real_server 10.0.0.2 81\n}\n\
             virtual_server 10.0.0.1 80 { protocol UDP }\nvirtual_server 10.0.0.1 80 { }\n\
             virtual_server ::1 80 { real_server ::2 80 { }\n real_server ::2 80 }\n",
        );
        assert_eq!(
            e,
            [
                "keepalived.conf:3:2: duplicate real server 10.0.0.2:80 in this virtual server (first defined on line 2)",
                "keepalived.conf:7:1: duplicate virtual server 10.0.0.1:80 TCP (first defined on line 1)",
                "keepalived.conf:9:2: duplicate real server [::2]:80 in this virtual server (first defined on line 8)",
            ]
        );
    }

    #[test]
    fn structural_errors_and_warnings_dropped_on_error() {
        let e = errors("foo\nvirtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n}\n");
        assert_eq!(
            e,
            ["keepalived.conf:2:28: unclosed block: `{` of `virtual_server` opened on line 2 has no matching `}`"]
        );
        let e = errors("}\nvirtual_server 10.0.0.1 80 { \"unterminated }\n}");
        assert_eq!(
            e,
            [
                "keepalived.conf:1:1: unexpected `}`: no block is open",
                "keepalived.conf:2:30: unterminated quoted string"
            ]
        );
        let text = format!("virtual_server 1.1.1.1 1 {{\n{}", "a {\n".repeat(40));
        assert!(errors(&text).iter().any(|e| e.ends_with("blocks nested too deeply (limit 32)")));
    }

    #[test]
    fn load_reports_the_path() {
        let err = load(Path::new("/nonexistent/keepalived.conf")).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.starts_with("/nonexistent/keepalived.conf: cannot read config: ")));
        let dir = std::env::temp_dir().join(format!("lvs-config-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("k.conf");
        assert!(std::fs::write(&path, SEED).is_ok());
        assert_eq!(load(&path).map(|l| l.config.virtual_servers.len()), Ok(1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_display_one_per_line() {
        let text = parse_str("virtual_server 1.1.1.1 x {\n lb_kind Q\n}", Path::new("f")).err().map(|e| e.to_string());
        assert_eq!(
            text.as_deref(),
            Some(
                "f:1:24: invalid port `x`: expected an integer 0-65535\nf:2:10: invalid lb_kind `Q`: expected DR, NAT or TUN"
            )
        );
    }

    /// Cheap deterministic fuzzing: truncations and byte mutations of valid
    /// configs must never panic.
    #[test]
    fn no_panic_on_truncations_and_mutations() {
        let base =
            format!("{SEED}virtual_server 2001:db8::1 80 {{ real_server \"2001:db8::2\" 80 {{ weight 3 }} }}\n# end\n");
        let chars: Vec<char> = base.chars().collect();
        for i in 0..=chars.len() {
            let _ = parse_str(&chars[..i].iter().collect::<String>(), Path::new("t"));
        }
        let alphabet = ['{', '}', '"', '!', '#', '\n', ' ', '0', 'x', ':', '.', 'é', '\0', '9'];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let mut m = chars.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pos = (seed % m.len() as u64) as usize;
                let c = alphabet[(seed >> 32) as usize % alphabet.len()];
                match (seed >> 40) % 3 {
                    0 => m[pos] = c,
                    1 => m.insert(pos, c),
                    _ => {
                        m.remove(pos);
                    }
                }
            }
            let _ = parse_str(&m.iter().collect::<String>(), Path::new("t"));
        }
    }
}
