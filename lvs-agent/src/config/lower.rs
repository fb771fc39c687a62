//! Lowers the generic tree into the typed [`Config`]. A keyword keepalived knows but we do not
//! model is a warning ("not supported yet"), one nobody knows is a warning ("unknown keyword"),
//! as keepalived itself only warns; a malformed value is an error naming what was expected.
//! All problems are collected, never just the first.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::model::*;
use super::tree::{Node, Word};

/// Top-level blocks keepalived knows that we skip without descending.
#[rustfmt::skip]
const UNSUPPORTED_TOP: &[&str] = &[
    "static_ipaddress", "static_routes", "static_rules", "linkbeat_interfaces", "garp_group",
    "vrrp_track_file", "track_file", "vrrp_track_process", "track_process", "bfd_instance",
    "net_namespace", "track_group", "interface_up_down_delays",
];

/// global_defs keywords keepalived knows that we do not model.
#[rustfmt::skip]
const UNSUPPORTED_GLOBAL: &[&str] = &[
    "linkbeat_use_polling", "snmp_socket", "enable_snmp_vrrp", "enable_snmp_keepalived",
    "enable_snmp_checker", "enable_snmp_rfc", "enable_snmp_rfcv2", "enable_snmp_rfcv3", "enable_traps",
    "enable_dbus", "dbus_service_name", "net_namespace", "net_namespace_ipvs", "namespace_with_ipsets",
    "instance", "vrrp_iptables", "vrrp_ipsets", "nftables", "nftables_priority", "nftables_ifindex",
    "nftables_counters", "nftables_ipvs", "vrrp_rt_priority", "checker_rt_priority", "bfd_rt_priority",
    "vrrp_cpu_affinity", "checker_cpu_affinity", "bfd_cpu_affinity", "vrrp_rlimit_rttime",
    "checker_rlimit_rttime", "bfd_rlimit_rttime", "checker_priority", "bfd_priority", "checker_no_swap",
    "bfd_no_swap", "max_auto_priority", "min_auto_priority_delay", "vrrp_netlink_cmd_rcv_bufs",
    "vrrp_netlink_cmd_rcv_bufs_force", "vrrp_netlink_monitor_rcv_bufs", "vrrp_netlink_monitor_rcv_bufs_force",
    "lvs_netlink_cmd_rcv_bufs", "lvs_netlink_cmd_rcv_bufs_force", "lvs_netlink_monitor_rcv_bufs",
    "lvs_netlink_monitor_rcv_bufs_force", "vmac_prefix", "vmac_addr_prefix", "vrrp_delay_after_boot",
    "reload_time_file", "reload_file", "reload_check_config", "config_save_dir", "tmp_config_directory",
    "rs_init_notifies", "no_checker_emails", "fifo_write_vrrp_states_on_reload", "notify_fifo_script",
    "vrrp_notify_fifo_script", "lvs_notify_fifo_script", "vrrp_rx_bufs_policy", "vrrp_rx_bufs_multiplier",
    "kernel_rx_buf_size", "process_names", "process_name", "vrrp_process_name", "checker_process_name",
    "bfd_process_name", "startup_script", "startup_script_timeout", "shutdown_script",
    "shutdown_script_timeout", "random_seed", "umask", "use_pid_dir", "use_symlink_paths",
    "disable_local_igmp", "vrrp_garp_extra_if", "vrrp_owner_ignore_adverts", "mem_check", "mem_check_log_all",
    "data_use_instance", "json_version", "snmp_vs_stats_update_interval", "snmp_rs_stats_update_interval",
    "vrrp_track_process", "vrrp_dont_track_primary", "vrrp_accept", "vrrp_no_accept", "bfd_process_name",
    "lvs_sync_daemon_group", "smtp_server_timeout", "vrrp_mcast_group4_port", "vrrp_garp_extra_if_delay",
    "checker_log_fail", "vrrp_startup_delay_time", "lvs_id", "router_id_hostname",
];

/// vrrp_instance keywords keepalived knows that we do not model.
#[rustfmt::skip]
const UNSUPPORTED_INSTANCE: &[&str] = &[
    "virtual_routes", "virtual_rules", "track_file", "track_process", "track_bfd", "track_src_ip",
    "auth_hmac", "use_vmac_addr", "use_ipvlan", "garp_extra_if", "kernel_rx_buf_size",
    "notify_priority_changes", "old_unicast_checksum", "timer_expired_backup", "owner_ignore_adverts",
    "unicast_fault_no_peer", "mcast_dst_ip", "linkbeat_use_polling", "debug", "no_virtual_ipaddress",
    "lvs_sync_daemon_interface", "notify_fifo", "vrrp_garp_extra_if", "net_namespace",
];

/// virtual_server / real_server keywords keepalived knows that we do not model.
#[rustfmt::skip]
const UNSUPPORTED_INNER: &[&str] = &["BFD_CHECK", "FILE_CHECK", "mh-port", "mh-fallback"];

/// keepalived's value for a bare `persistence_timeout`.
const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 360;
/// keepalived's bound on lvs_timeouts (31 days).
const LVS_MAX_TIMEOUT: u32 = 86400 * 31;

#[rustfmt::skip]
const SCHED_FLAGS: &[&str] = &[
    "hashed", "flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback", "mh-port", "mh-fallback",
];

/// Lowers the tree into a [`Config`]; returns (config, errors, warnings).
pub(super) fn lower(nodes: &[Node]) -> (Config, Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut cx = Lower { errors: Vec::new(), warnings: Vec::new() };
    let mut config = Config::default();
    for node in nodes {
        let Some(kw) = node.words.first() else {
            continue;
        };
        match kw.text.as_str() {
            "virtual_server" => {
                if let Some(vs) = cx.virtual_server(node, kw) {
                    match vs.target {
                        VsTarget::Addr(..) => config.virtual_servers.push(vs),
                        _ => config.other_virtual_servers.push(vs),
                    }
                }
            }
            "virtual_server_group" => config.virtual_server_groups.extend(cx.vs_group(node, kw)),
            "global_defs" => {
                if let Some(children) = cx.block(node, kw) {
                    for child in children {
                        cx.global(&mut config.global_defs, child);
                    }
                }
            }
            "vrrp_script" => config.vrrp_scripts.extend(cx.vrrp_script(node, kw)),
            "vrrp_instance" => config.vrrp_instances.extend(cx.vrrp_instance(node, kw)),
            "vrrp_sync_group" => config.vrrp_sync_groups.extend(cx.sync_group(node, kw)),
            "SSL" => {
                if let Some(children) = cx.block(node, kw) {
                    let ssl = config.ssl.get_or_insert_with(SslConfig::default);
                    for child in children {
                        cx.ssl(ssl, child);
                    }
                }
            }
            name if UNSUPPORTED_TOP.contains(&name) => {
                let what = if node.children.is_some() { "block ignored" } else { "ignored" };
                cx.warn(kw, format!("`{name}` is not supported yet; {what}"))
            }
            name => cx.warn(kw, format!("unknown keyword `{name}`; ignored")),
        }
    }
    cx.validate(&config);
    (config, cx.errors, cx.warnings)
}

fn loc(w: &Word) -> Location {
    Location { file: Arc::clone(&w.file), line: w.line, column: w.column }
}

struct Lower {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

/// The keyword of a statement, if any.
fn keyword(node: &Node) -> Option<&Word> {
    node.words.first()
}

fn rest(node: &Node) -> &[Word] {
    node.words.get(1..).unwrap_or_default()
}

impl Lower {
    fn error(&mut self, at: &Word, message: String) {
        self.errors.push(Diagnostic { location: loc(at), message });
    }

    fn warn(&mut self, at: &Word, message: String) {
        self.warnings.push(Diagnostic { location: loc(at), message });
    }

    /// The statement's block, or an error saying it needs one.
    fn block<'a>(&mut self, node: &'a Node, kw: &Word) -> Option<&'a [Node]> {
        if node.children.is_none() {
            self.error(kw, format!("`{}` needs a `{{ ... }}` block", kw.text));
        }
        node.children.as_deref()
    }

    /// The `n` arguments after the keyword, or an error naming the usage.
    /// Extra arguments are warned about and ignored.
    fn args<'a>(&mut self, node: &'a Node, kw: &Word, usage: &str, n: usize) -> Option<&'a [Word]> {
        let args = rest(node);
        let Some(wanted) = args.get(..n) else {
            self.error(kw, format!("missing argument for `{}`: expected `{usage}`", kw.text));
            return None;
        };
        if let Some(extra) = args.get(n) {
            self.warn(extra, format!("unexpected extra argument `{}`; ignored", extra.text));
        }
        Some(wanted)
    }

    /// Exactly one argument; `what` names it in the usage (`keyword WHAT`).
    fn arg1<'a>(&mut self, node: &'a Node, what: &str) -> Option<&'a Word> {
        let kw = keyword(node)?;
        let usage = format!("{} {what}", kw.text);
        self.args(node, kw, &usage, 1).and_then(<[Word]>::first)
    }

    fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        self.arg1(node, what).map(|w| w.text.clone())
    }

    /// All arguments joined by spaces (script command lines), at least one.
    fn command(&mut self, node: &Node) -> Option<String> {
        let kw = keyword(node)?;
        let words: Vec<&str> = rest(node).iter().map(|w| w.text.as_str()).collect();
        if words.is_empty() {
            self.error(kw, format!("missing argument for `{}`: expected `{} COMMAND`", kw.text, kw.text));
            return None;
        }
        Some(words.join(" "))
    }

    /// `USER [GROUP]`.
    fn user(&mut self, node: &Node) -> Option<(String, Option<String>)> {
        let kw = keyword(node)?;
        let args = rest(node);
        let Some(user) = args.first() else {
            self.error(kw, format!("missing argument for `{}`: expected `{} USER [GROUP]`", kw.text, kw.text));
            return None;
        };
        if let Some(extra) = args.get(2) {
            self.warn(extra, format!("unexpected extra argument `{}`; ignored", extra.text));
        }
        Some((user.text.clone(), args.get(1).map(|g| g.text.clone())))
    }

    fn invalid(&mut self, what: &str, word: &Word, expected: &str) {
        self.error(word, format!("invalid {what} `{}`: expected {expected}", word.text));
    }

    fn ip(&mut self, word: &Word) -> Option<IpAddr> {
        let ip = word.text.parse().ok();
        if ip.is_none() {
            self.invalid("IP address", word, "an IPv4 or IPv6 address");
        }
        ip
    }

    fn ip_arg(&mut self, node: &Node) -> Option<IpAddr> {
        let w = self.arg1(node, "IP")?;
        self.ip(w)
    }

    /// Unsigned decimal integer within `0..=max`; no sign, no hex.
    fn uint(&mut self, what: &str, word: &Word, max: u32) -> Option<u32> {
        self.uint_in(what, word, 0, max)
    }

    fn uint_in(&mut self, what: &str, word: &Word, min: u32, max: u32) -> Option<u32> {
        let digits = !word.text.is_empty() && word.text.bytes().all(|b| b.is_ascii_digit());
        let value = digits.then(|| word.text.parse::<u32>().ok()).flatten().filter(|v| (min..=max).contains(v));
        if value.is_none() {
            self.invalid(what, word, &format!("an integer {min}-{max}"));
        }
        value
    }

    /// One unsigned argument within `min..=max`.
    fn num(&mut self, node: &Node, min: u32, max: u32) -> Option<u32> {
        let w = self.arg1(node, "NUMBER")?;
        let what = keyword(node).map_or(String::new(), |k| k.text.clone());
        self.uint_in(&what, w, min, max)
    }

    fn int(&mut self, what: &str, word: &Word, min: i32, max: i32) -> Option<i32> {
        let digits = word.text.strip_prefix(['-', '+']).unwrap_or(&word.text);
        let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        let value = ok.then(|| word.text.parse::<i32>().ok()).flatten().filter(|v| (min..=max).contains(v));
        if value.is_none() {
            self.invalid(what, word, &format!("an integer {min} to {max}"));
        }
        value
    }

    fn port(&mut self, word: &Word) -> Option<u16> {
        self.uint("port", word, u16::MAX.into()).and_then(|p| u16::try_from(p).ok())
    }

    fn port_arg(&mut self, node: &Node) -> Option<u16> {
        let w = self.arg1(node, "PORT")?;
        self.port(w)
    }

    /// A keepalived `<TIMER>`: seconds with an optional fraction (microsecond resolution).
    fn timer_word(&mut self, what: &str, word: &Word) -> Option<Duration> {
        let value = parse_timer(&word.text);
        if value.is_none() {
            self.invalid(what, word, "a number of seconds such as 3 or 0.5");
        }
        value
    }

    fn timer(&mut self, node: &Node) -> Option<Duration> {
        let w = self.arg1(node, "SECONDS")?;
        let what = keyword(node).map_or(String::new(), |k| k.text.clone());
        self.timer_word(&what, w)
    }

    /// A flag: bare means true; an optional `<BOOL>` (on|off|true|false|yes|no) says which.
    fn flag(&mut self, node: &Node) -> Option<bool> {
        let args = rest(node);
        let Some(w) = args.first() else {
            return Some(true);
        };
        if let Some(extra) = args.get(1) {
            self.warn(extra, format!("unexpected extra argument `{}`; ignored", extra.text));
        }
        match w.text.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" => Some(true),
            "off" | "false" | "no" => Some(false),
            _ => {
                let what = keyword(node).map_or(String::new(), |k| k.text.clone());
                self.invalid(&what, w, "nothing, or one of on, off, true, false, yes, no");
                None
            }
        }
    }

    fn set_flag(&mut self, node: &Node, field: &mut bool) {
        if let Some(v) = self.flag(node) {
            *field = v;
        }
    }

    /// A name given after a block keyword (`vrrp_instance NAME {`).
    fn named<'a>(&mut self, node: &'a Node, kw: &Word) -> Option<(String, &'a [Node])> {
        let usage = format!("{} NAME {{ ... }}", kw.text);
        let name = self.args(node, kw, &usage, 1).and_then(<[Word]>::first).map(|w| w.text.clone());
        let children = self.block(node, kw);
        Some((name?, children?))
    }

    fn unsupported_or_unknown(&mut self, kw: &Word, known: &[&str]) {
        let name = kw.text.as_str();
        let message = if known.contains(&name) || UNSUPPORTED_INNER.contains(&name) {
            format!("`{name}` is not supported yet; ignored")
        } else {
            format!("unknown keyword `{name}`; ignored")
        };
        self.warn(kw, message);
    }

    // ---- global_defs ------------------------------------------------------------------------

    fn global(&mut self, g: &mut GlobalDefs, node: &Node) {
        let Some(kw) = keyword(node) else { return };
        match kw.text.as_str() {
            "router_id" => g.router_id = self.text(node, "NAME").or(g.router_id.take()),
            "notification_email" => {
                if let Some(children) = self.block(node, kw) {
                    g.notification_email.extend(children.iter().flat_map(|c| c.words.iter().map(|w| w.text.clone())));
                }
            }
            "notification_email_from" => g.notification_email_from = self.text(node, "ADDRESS"),
            "smtp_server" => {
                let args = rest(node);
                match args {
                    [] => {
                        self.error(kw, "missing argument for `smtp_server`: expected `smtp_server HOST [PORT]`".into())
                    }
                    [host, more @ ..] => {
                        let port = match more.first() {
                            Some(p) => self.port(p),
                            None => Some(25),
                        };
                        if let Some(extra) = more.get(1) {
                            self.warn(extra, format!("unexpected extra argument `{}`; ignored", extra.text));
                        }
                        if let Some(port) = port {
                            g.smtp_server = Some((host.text.clone(), port));
                        }
                    }
                }
            }
            "smtp_helo_name" => g.smtp_helo_name = self.text(node, "NAME"),
            "smtp_connect_timeout" => g.smtp_connect_timeout = self.timer(node),
            "smtp_alert" => g.smtp_alert = self.flag(node),
            "smtp_alert_vrrp" => g.smtp_alert_vrrp = self.flag(node),
            "smtp_alert_checker" => g.smtp_alert_checker = self.flag(node),
            "no_email_faults" => self.set_flag(node, &mut g.no_email_faults),
            "lvs_timeouts" => g.lvs_timeouts = self.lvs_timeouts(node, kw).or(g.lvs_timeouts),
            "lvs_sync_daemon" => g.lvs_sync_daemon = self.sync_daemon(node, kw).or(g.lvs_sync_daemon.take()),
            "lvs_sync_daemon_interface" => {
                if let Some(w) = self.arg1(node, "INTERFACE") {
                    match &mut g.lvs_sync_daemon {
                        Some(d) => d.interface = w.text.clone(),
                        None => {
                            g.lvs_sync_daemon = Some(LvsSyncDaemon {
                                interface: w.text.clone(),
                                vrrp_instance: None,
                                sync_id: None,
                                maxlen: None,
                                port: None,
                                ttl: None,
                                group: None,
                                location: loc(kw),
                            })
                        }
                    }
                }
            }
            "lvs_flush" => self.set_flag(node, &mut g.lvs_flush),
            "lvs_flush_on_stop" => g.lvs_flush_on_stop = true,
            "enable_script_security" => self.set_flag(node, &mut g.enable_script_security),
            "script_user" => g.script_user = self.user(node),
            "dynamic_interfaces" => g.dynamic_interfaces = true,
            "notify_fifo" => g.notify_fifo = rest(node).first().map(|w| w.text.clone()),
            "vrrp_notify_fifo" => g.vrrp_notify_fifo = rest(node).first().map(|w| w.text.clone()),
            "lvs_notify_fifo" => g.lvs_notify_fifo = rest(node).first().map(|w| w.text.clone()),
            "checker_log_all_failures" => g.checker_log_all_failures = self.flag(node),
            "vrrp_version" => g.vrrp_version = self.version(node).or(g.vrrp_version),
            "vrrp_strict" => self.set_flag(node, &mut g.vrrp_strict),
            "vrrp_mcast_group4" => {
                if let Some(w) = self.arg1(node, "IPv4") {
                    match w.text.parse::<Ipv4Addr>() {
                        Ok(a) if a.is_multicast() => g.vrrp_mcast_group4 = Some(a.into()),
                        _ => self.invalid("vrrp_mcast_group4", w, "an IPv4 multicast address"),
                    }
                }
            }
            "vrrp_mcast_group6" => {
                if let Some(w) = self.arg1(node, "IPv6") {
                    match w.text.parse::<Ipv6Addr>() {
                        Ok(a) if a.is_multicast() => g.vrrp_mcast_group6 = Some(a.into()),
                        _ => self.invalid("vrrp_mcast_group6", w, "an IPv6 multicast address"),
                    }
                }
            }
            "vrrp_garp_master_delay" => g.vrrp_garp_master_delay = self.timer(node),
            "vrrp_garp_master_repeat" => g.vrrp_garp_master_repeat = self.num(node, 0, 65535),
            "vrrp_garp_master_refresh" => g.vrrp_garp_master_refresh = self.timer(node),
            "vrrp_garp_master_refresh_repeat" => g.vrrp_garp_master_refresh_repeat = self.num(node, 0, 65535),
            "vrrp_garp_lower_prio_delay" => g.vrrp_garp_lower_prio_delay = self.timer(node),
            "vrrp_garp_lower_prio_repeat" => g.vrrp_garp_lower_prio_repeat = self.num(node, 0, 65535),
            "vrrp_garp_interval" => g.vrrp_garp_interval = self.timer(node),
            "vrrp_gna_interval" => g.vrrp_gna_interval = self.timer(node),
            "vrrp_min_garp" => self.set_flag(node, &mut g.vrrp_min_garp),
            "vrrp_check_unicast_src" => self.set_flag(node, &mut g.vrrp_check_unicast_src),
            "vrrp_skip_check_adv_addr" => self.set_flag(node, &mut g.vrrp_skip_check_adv_addr),
            "vrrp_lower_prio_no_advert" => g.vrrp_lower_prio_no_advert = self.flag(node),
            "vrrp_higher_prio_send_advert" => g.vrrp_higher_prio_send_advert = self.flag(node),
            "vrrp_priority" => {
                if let Some(w) = self.arg1(node, "-20..19") {
                    g.vrrp_priority = self.int("vrrp_priority", w, -20, 19);
                }
            }
            "vrrp_no_swap" => self.set_flag(node, &mut g.vrrp_no_swap),
            "vrrp_startup_delay" => g.vrrp_startup_delay = self.timer(node),
            "vrrp_down_timer_adverts" => g.vrrp_down_timer_adverts = self.num(node, 1, 100),
            "v3_checksum_as_v2" | "vrrp_v3_checksum_as_v2" => self.set_flag(node, &mut g.v3_checksum_as_v2),
            _ => self.unsupported_or_unknown(kw, UNSUPPORTED_GLOBAL),
        }
    }

    fn version(&mut self, node: &Node) -> Option<u8> {
        let w = self.arg1(node, "2|3")?;
        match w.text.as_str() {
            "2" => Some(2),
            "3" => Some(3),
            _ => {
                self.invalid(&keyword(node).map_or(String::new(), |k| k.text.clone()), w, "2 or 3");
                None
            }
        }
    }

    fn lvs_timeouts(&mut self, node: &Node, kw: &Word) -> Option<LvsTimeouts> {
        let args = rest(node);
        if args.is_empty() {
            let usage = "lvs_timeouts [tcp SECONDS] [tcpfin SECONDS] [udp SECONDS]";
            self.error(kw, format!("missing argument for `lvs_timeouts`: expected `{usage}`"));
            return None;
        }
        let mut t = LvsTimeouts::default();
        let mut ok = true;
        let mut i = 0;
        while let Some(name) = args.get(i) {
            let slot = match name.text.to_ascii_lowercase().as_str() {
                "tcp" => &mut t.tcp,
                "tcpfin" => &mut t.tcp_fin,
                "udp" => &mut t.udp,
                _ => {
                    self.invalid("lvs_timeouts protocol", name, "tcp, tcpfin or udp");
                    ok = false;
                    i += 2;
                    continue;
                }
            };
            let Some(value) = args.get(i + 1) else {
                self.error(name, format!("missing value for `lvs_timeouts {}`: expected SECONDS", name.text));
                return None;
            };
            let what = format!("lvs_timeouts {}", name.text);
            let parsed = {
                let digits = !value.text.is_empty() && value.text.bytes().all(|b| b.is_ascii_digit());
                digits.then(|| value.text.parse::<u32>().ok()).flatten().filter(|v| (1..=LVS_MAX_TIMEOUT).contains(v))
            };
            match parsed {
                Some(v) => *slot = Some(v),
                None => {
                    self.invalid(&what, value, &format!("an integer 1-{LVS_MAX_TIMEOUT} (seconds)"));
                    ok = false;
                }
            }
            i += 2;
        }
        ok.then_some(t)
    }

    fn sync_daemon(&mut self, node: &Node, kw: &Word) -> Option<LvsSyncDaemon> {
        let args = rest(node);
        let Some(interface) = args.first() else {
            let usage = "lvs_sync_daemon INTERFACE [VRRP_INSTANCE] [id N] [maxlen N] [port N] [ttl N] [group IP]";
            self.error(kw, format!("missing argument for `lvs_sync_daemon`: expected `{usage}`"));
            return None;
        };
        let mut d = LvsSyncDaemon {
            interface: interface.text.clone(),
            vrrp_instance: None,
            sync_id: None,
            maxlen: None,
            port: None,
            ttl: None,
            group: None,
            location: loc(kw),
        };
        let options = ["id", "maxlen", "port", "ttl", "group"];
        let mut i = 1;
        if let Some(w) = args.get(1).filter(|w| !options.contains(&w.text.as_str())) {
            d.vrrp_instance = Some(w.text.clone());
            i = 2;
        }
        let mut ok = true;
        while let Some(opt) = args.get(i) {
            let Some(value) = args.get(i + 1) else {
                self.error(opt, format!("missing value for `{}` of `lvs_sync_daemon`", opt.text));
                return None;
            };
            let good = match opt.text.as_str() {
                "id" => self.uint("sync id", value, 255).map(|v| d.sync_id = Some(v)).is_some(),
                "maxlen" => self.uint_in("maxlen", value, 1, 65535 - 20 - 8).map(|v| d.maxlen = Some(v)).is_some(),
                "port" => self.port(value).map(|v| d.port = Some(v)).is_some(),
                "ttl" => self.uint_in("ttl", value, 1, 255).map(|v| d.ttl = Some(v)).is_some(),
                "group" => self.ip(value).map(|v| d.group = Some(v)).is_some(),
                _ => {
                    self.invalid("lvs_sync_daemon option", opt, "id, maxlen, port, ttl or group");
                    false
                }
            };
            ok &= good;
            i += 2;
        }
        ok.then_some(d)
    }

    fn ssl(&mut self, ssl: &mut SslConfig, node: &Node) {
        let Some(kw) = keyword(node) else { return };
        match kw.text.as_str() {
            "password" => ssl.password = self.text(node, "PASSWORD"),
            "ca" => ssl.ca = self.text(node, "FILE"),
            "certificate" => ssl.certificate = self.text(node, "FILE"),
            "key" => ssl.key = self.text(node, "FILE"),
            _ => self.unsupported_or_unknown(kw, &[]),
        }
    }

    // ---- VRRP -------------------------------------------------------------------------------

    fn vrrp_script(&mut self, node: &Node, kw: &Word) -> Option<VrrpScript> {
        let (name, children) = self.named(node, kw)?;
        let mut s = VrrpScript {
            name,
            script: None,
            interval: Duration::from_secs(1),
            timeout: None,
            weight: 0,
            weight_reverse: false,
            rise: 1,
            fall: 1,
            user: None,
            init_fail: false,
            location: loc(kw),
        };
        for child in children {
            let Some(ckw) = keyword(child) else { continue };
            match ckw.text.as_str() {
                "script" => s.script = self.command(child),
                "interval" => s.interval = self.timer(child).unwrap_or(s.interval),
                "timeout" => s.timeout = self.timer(child),
                "weight" => {
                    if let Some((w, reverse)) = self.weight(child, ckw) {
                        (s.weight, s.weight_reverse) = (w, reverse);
                    }
                }
                "rise" => s.rise = self.num(child, 1, u32::MAX).unwrap_or(s.rise),
                "fall" => s.fall = self.num(child, 1, u32::MAX).unwrap_or(s.fall),
                "user" => s.user = self.user(child),
                "init_fail" => self.set_flag(child, &mut s.init_fail),
                _ => self.unsupported_or_unknown(ckw, &[]),
            }
        }
        Some(s)
    }

    /// `weight W [reverse|noreverse]`, W in -253..253.
    fn weight(&mut self, node: &Node, kw: &Word) -> Option<(i32, bool)> {
        let args = rest(node);
        let Some(w) = args.first() else {
            self.error(kw, "missing argument for `weight`: expected `weight -253..253 [reverse]`".into());
            return None;
        };
        let reverse = self.reverse_word(args.get(1));
        if let Some(extra) = args.get(2) {
            self.warn(extra, format!("unexpected extra argument `{}`; ignored", extra.text));
        }
        Some((self.int("weight", w, -253, 253)?, reverse))
    }

    fn reverse_word(&mut self, w: Option<&Word>) -> bool {
        match w.map(|w| w.text.as_str()) {
            None | Some("noreverse") => false,
            Some("reverse") => true,
            Some(_) => {
                if let Some(w) = w {
                    self.invalid("option", w, "reverse or noreverse");
                }
                false
            }
        }
    }

    fn notify(&mut self, notify: &mut Notify, node: &Node, name: &str) -> bool {
        let slot = match name {
            "notify_master" => &mut notify.master,
            "notify_backup" => &mut notify.backup,
            "notify_fault" => &mut notify.fault,
            "notify_stop" => &mut notify.stop,
            "notify_deleted" => &mut notify.deleted,
            "notify_master_rx_lower_pri" => &mut notify.master_rx_lower_pri,
            "notify" => &mut notify.any,
            _ => return false,
        };
        *slot = self.command(node);
        true
    }

    fn vrrp_instance(&mut self, node: &Node, kw: &Word) -> Option<VrrpInstance> {
        let (name, children) = self.named(node, kw)?;
        let mut v = VrrpInstance {
            name,
            state: VrrpState::Backup,
            interface: None,
            virtual_router_id: None,
            priority: 100,
            advert_int: Duration::from_secs(1),
            nopreempt: false,
            preempt_delay: None,
            authentication: None,
            virtual_ipaddress: Vec::new(),
            virtual_ipaddress_excluded: Vec::new(),
            unicast_src_ip: None,
            unicast_peers: Vec::new(),
            unicast_ttl: None,
            mcast_src_ip: None,
            track_interface: Vec::new(),
            track_script: Vec::new(),
            dont_track_primary: false,
            notify: Notify::default(),
            smtp_alert: None,
            garp_master_delay: None,
            garp_master_repeat: None,
            garp_master_refresh: None,
            garp_master_refresh_repeat: None,
            garp_lower_prio_delay: None,
            garp_lower_prio_repeat: None,
            version: None,
            use_vmac: false,
            vmac_name: None,
            vmac_xmit_base: false,
            native_ipv6: false,
            accept: None,
            strict_mode: None,
            check_unicast_src: false,
            skip_check_adv_addr: None,
            lower_prio_no_advert: None,
            higher_prio_send_advert: None,
            down_timer_adverts: None,
            v3_checksum_as_v2: None,
            promote_secondaries: false,
            location: loc(kw),
        };
        for child in children {
            let Some(ckw) = keyword(child) else { continue };
            let name = ckw.text.as_str();
            if self.notify(&mut v.notify, child, name) {
                continue;
            }
            match name {
                "state" => {
                    if let Some(w) = self.arg1(child, "MASTER|BACKUP") {
                        match w.text.to_ascii_uppercase().as_str() {
                            "MASTER" => v.state = VrrpState::Master,
                            "BACKUP" => v.state = VrrpState::Backup,
                            _ => self.invalid("state", w, "MASTER or BACKUP"),
                        }
                    }
                }
                "interface" => v.interface = self.text(child, "INTERFACE"),
                "virtual_router_id" => v.virtual_router_id = self.num(child, 1, 255).and_then(|n| u8::try_from(n).ok()),
                "priority" => {
                    v.priority = self.num(child, 1, 255).and_then(|n| u8::try_from(n).ok()).unwrap_or(v.priority)
                }
                "advert_int" => {
                    if let Some(w) = self.arg1(child, "SECONDS") {
                        match parse_timer(&w.text) {
                            Some(d) if d >= Duration::from_millis(10) && d <= Duration::from_secs(255) => {
                                v.advert_int = d
                            }
                            _ => self.invalid("advert_int", w, "seconds, 0.01 to 255"),
                        }
                    }
                }
                "nopreempt" => v.nopreempt = true,
                "preempt" => v.nopreempt = false,
                "preempt_delay" => {
                    if let Some(w) = self.arg1(child, "SECONDS") {
                        match parse_timer(&w.text) {
                            Some(d) if d <= Duration::from_secs(1000) => v.preempt_delay = Some(d),
                            _ => self.invalid("preempt_delay", w, "seconds, 0 to 1000"),
                        }
                    }
                }
                "authentication" => {
                    if let Some(block) = self.block(child, ckw) {
                        v.authentication = Some(self.authentication(block));
                    }
                }
                "virtual_ipaddress" => {
                    if let Some(block) = self.block(child, ckw) {
                        v.virtual_ipaddress.extend(block.iter().filter_map(|n| self.virtual_ip(n)));
                    }
                }
                "virtual_ipaddress_excluded" => {
                    if let Some(block) = self.block(child, ckw) {
                        v.virtual_ipaddress_excluded.extend(block.iter().filter_map(|n| self.virtual_ip(n)));
                    }
                }
                "unicast_src_ip" => v.unicast_src_ip = self.ip_arg(child),
                "mcast_src_ip" => v.mcast_src_ip = self.ip_arg(child),
                "unicast_peer" => {
                    if let Some(block) = self.block(child, ckw) {
                        v.unicast_peers.extend(block.iter().filter_map(|n| self.unicast_peer(n)));
                    }
                }
                "unicast_ttl" => v.unicast_ttl = self.num(child, 1, 255).and_then(|n| u8::try_from(n).ok()),
                "track_interface" => {
                    if let Some(block) = self.block(child, ckw) {
                        v.track_interface.extend(block.iter().filter_map(|n| self.track(n)));
                    }
                }
                "track_script" => {
                    if let Some(block) = self.block(child, ckw) {
                        v.track_script.extend(block.iter().filter_map(|n| self.track(n)));
                    }
                }
                "dont_track_primary" => v.dont_track_primary = true,
                "smtp_alert" => v.smtp_alert = self.flag(child),
                "garp_master_delay" => v.garp_master_delay = self.timer(child),
                "garp_master_repeat" => v.garp_master_repeat = self.num(child, 0, 65535),
                "garp_master_refresh" => v.garp_master_refresh = self.timer(child),
                "garp_master_refresh_repeat" => v.garp_master_refresh_repeat = self.num(child, 0, 65535),
                "garp_lower_prio_delay" => v.garp_lower_prio_delay = self.timer(child),
                "garp_lower_prio_repeat" => v.garp_lower_prio_repeat = self.num(child, 0, 65535),
                "version" | "vrrp_version" => v.version = self.version(child).or(v.version),
                "use_vmac" => {
                    v.use_vmac = true;
                    v.vmac_name = rest(child).first().map(|w| w.text.clone());
                }
                "vmac_xmit_base" => v.vmac_xmit_base = true,
                "native_ipv6" => v.native_ipv6 = true,
                "accept" => v.accept = Some(true),
                "no_accept" => v.accept = Some(false),
                "strict_mode" => v.strict_mode = self.flag(child),
                "check_unicast_src" => v.check_unicast_src = true,
                "skip_check_adv_addr" => v.skip_check_adv_addr = self.flag(child),
                "lower_prio_no_advert" => v.lower_prio_no_advert = self.flag(child),
                "higher_prio_send_advert" => v.higher_prio_send_advert = self.flag(child),
                "down_timer_adverts" => v.down_timer_adverts = self.num(child, 1, 100),
                "v3_checksum_as_v2" => v.v3_checksum_as_v2 = self.flag(child),
                "promote_secondaries" => v.promote_secondaries = true,
                _ => self.unsupported_or_unknown(ckw, UNSUPPORTED_INSTANCE),
            }
        }
        Some(v)
    }

    fn authentication(&mut self, block: &[Node]) -> Authentication {
        let mut a = Authentication { auth_type: None, auth_pass: None };
        for node in block {
            let Some(kw) = keyword(node) else { continue };
            match kw.text.as_str() {
                "auth_type" => {
                    if let Some(w) = self.arg1(node, "PASS|AH") {
                        match w.text.to_ascii_uppercase().as_str() {
                            "PASS" => a.auth_type = Some(AuthType::Pass),
                            "AH" => a.auth_type = Some(AuthType::Ah),
                            _ => self.invalid("auth_type", w, "PASS or AH"),
                        }
                    }
                }
                "auth_pass" => {
                    if let Some(w) = self.arg1(node, "PASSWORD") {
                        if w.text.chars().count() > 8 {
                            self.warn(w, "auth_pass is longer than 8 characters; only the first 8 are used".into());
                        }
                        a.auth_pass = Some(w.text.chars().take(8).collect());
                    }
                }
                _ => self.unsupported_or_unknown(kw, &[]),
            }
        }
        a
    }

    /// `ADDR[/LEN] [options]`.
    fn virtual_ip(&mut self, node: &Node) -> Option<VirtualIp> {
        let first = keyword(node)?;
        let (addr_text, len_text) = match first.text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (first.text.as_str(), None),
        };
        let Ok(addr) = addr_text.parse::<IpAddr>() else {
            self.invalid("virtual address", first, "an IPv4 or IPv6 address, optionally with /PREFIX");
            return None;
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len_text {
            None => None,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => Some(n),
                _ => {
                    self.invalid("prefix length", first, &format!("ADDRESS/0-{max}"));
                    return None;
                }
            },
        };
        let mut vip = VirtualIp {
            addr,
            prefix_len,
            dev: None,
            label: None,
            brd: None,
            scope: None,
            peer: None,
            options: Vec::new(),
            location: loc(first),
        };
        let args = rest(node);
        let mut i = 0;
        while let Some(opt) = args.get(i) {
            i += 1;
            let with_value = ["dev", "label", "brd", "broadcast", "scope", "peer", "preferred_lft", "track_group"];
            if with_value.contains(&opt.text.as_str()) {
                let Some(value) = args.get(i) else {
                    self.error(opt, format!("missing value for `{}` of a virtual address", opt.text));
                    return None;
                };
                i += 1;
                let value = value.text.clone();
                match opt.text.as_str() {
                    "dev" => vip.dev = Some(value),
                    "label" => vip.label = Some(value),
                    "brd" | "broadcast" => vip.brd = Some(value),
                    "scope" => vip.scope = Some(value),
                    "peer" => vip.peer = Some(value),
                    other => vip.options.push(format!("{other} {value}")),
                }
                continue;
            }
            let flags = ["home", "-nodad", "nodad", "noprefixroute", "autojoin", "no_track", "use_vmac", "mngtmpaddr"];
            if flags.contains(&opt.text.as_str()) {
                vip.options.push(opt.text.clone());
            } else {
                self.warn(opt, format!("unknown virtual address option `{}`; ignored", opt.text));
            }
        }
        Some(vip)
    }

    fn unicast_peer(&mut self, node: &Node) -> Option<UnicastPeer> {
        let first = keyword(node)?;
        let addr = self.ip(first)?;
        let mut peer = UnicastPeer { addr, min_ttl: None, max_ttl: None };
        let args = rest(node);
        let mut i = 0;
        while let Some(opt) = args.get(i) {
            let slot = match opt.text.as_str() {
                "min_ttl" => &mut peer.min_ttl,
                "max_ttl" => &mut peer.max_ttl,
                _ => {
                    self.warn(opt, format!("unknown unicast_peer option `{}`; ignored", opt.text));
                    i += 1;
                    continue;
                }
            };
            let Some(value) = args.get(i + 1) else {
                self.error(opt, format!("missing value for `{}`: expected 0-255", opt.text));
                return None;
            };
            *slot = Some(self.uint(&opt.text, value, 255).and_then(|v| u8::try_from(v).ok())?);
            i += 2;
        }
        Some(peer)
    }

    /// `NAME [weight W] [reverse|noreverse]`.
    fn track(&mut self, node: &Node) -> Option<Track> {
        let first = keyword(node)?;
        let mut t = Track { name: first.text.clone(), weight: None, reverse: false };
        let args = rest(node);
        let mut i = 0;
        while let Some(opt) = args.get(i) {
            i += 1;
            match opt.text.as_str() {
                "weight" => {
                    let Some(value) = args.get(i) else {
                        self.error(opt, "missing value for `weight`: expected -253..253".into());
                        return None;
                    };
                    i += 1;
                    t.weight = Some(self.int("weight", value, -253, 253)?);
                }
                "reverse" => t.reverse = true,
                "noreverse" => t.reverse = false,
                _ => self.warn(opt, format!("unknown track option `{}`; ignored", opt.text)),
            }
        }
        Some(t)
    }

    fn sync_group(&mut self, node: &Node, kw: &Word) -> Option<VrrpSyncGroup> {
        let (name, children) = self.named(node, kw)?;
        let mut g = VrrpSyncGroup {
            name,
            group: Vec::new(),
            notify: Notify::default(),
            smtp_alert: None,
            track_interface: Vec::new(),
            track_script: Vec::new(),
            sync_group_tracking_weight: false,
            location: loc(kw),
        };
        for child in children {
            let Some(ckw) = keyword(child) else { continue };
            let name = ckw.text.as_str();
            if self.notify(&mut g.notify, child, name) {
                continue;
            }
            match name {
                "group" => {
                    if let Some(block) = self.block(child, ckw) {
                        g.group.extend(block.iter().flat_map(|n| n.words.iter().map(|w| w.text.clone())));
                    }
                }
                "smtp_alert" => g.smtp_alert = self.flag(child),
                "track_interface" => {
                    if let Some(block) = self.block(child, ckw) {
                        g.track_interface.extend(block.iter().filter_map(|n| self.track(n)));
                    }
                }
                "track_script" => {
                    if let Some(block) = self.block(child, ckw) {
                        g.track_script.extend(block.iter().filter_map(|n| self.track(n)));
                    }
                }
                "sync_group_tracking_weight" => g.sync_group_tracking_weight = true,
                // Deprecated: now what sync_group_tracking_weight says.
                "global_tracking" => g.sync_group_tracking_weight = true,
                _ => self.unsupported_or_unknown(
                    ckw,
                    &["track_file", "track_process", "track_bfd", "notify_priority_changes"],
                ),
            }
        }
        Some(g)
    }

    // ---- LVS --------------------------------------------------------------------------------

    fn vs_group(&mut self, node: &Node, kw: &Word) -> Option<VirtualServerGroup> {
        let (name, children) = self.named(node, kw)?;
        let mut g = VirtualServerGroup { name, entries: Vec::new(), location: loc(kw) };
        for child in children {
            let Some(first) = keyword(child) else { continue };
            if first.text == "fwmark" {
                let args = rest(child);
                let Some(mark) = args.first() else {
                    self.error(first, "missing argument for `fwmark`: expected `fwmark N [inet|inet6]`".into());
                    continue;
                };
                let family = match args.get(1).map(|w| w.text.as_str()) {
                    None => Some(None),
                    Some("inet") => Some(Some(IpFamily::Inet)),
                    Some("inet6") => Some(Some(IpFamily::Inet6)),
                    Some(_) => {
                        if let Some(w) = args.get(1) {
                            self.invalid("address family", w, "inet or inet6");
                        }
                        None
                    }
                };
                if let (Some(mark), Some(family)) = (self.uint_in("fwmark", mark, 1, u32::MAX), family) {
                    g.entries.push(VsgEntry::Fwmark { mark, family });
                }
                continue;
            }
            let range = self.addr_range(first);
            let port = match rest(child) {
                [] => Some(0),
                [p, more @ ..] => {
                    if let Some(extra) = more.first() {
                        self.warn(extra, format!("unexpected extra argument `{}`; ignored", extra.text));
                    }
                    self.port(p)
                }
            };
            if let (Some((first, last)), Some(port)) = (range, port) {
                g.entries.push(VsgEntry::Range { first, last, port });
            }
        }
        Some(g)
    }

    /// `IP`, `IP-LAST` (last byte, or last hextet in hex), or `IP/LEN`.
    fn addr_range(&mut self, w: &Word) -> Option<(IpAddr, IpAddr)> {
        let expected = "an address, a range such as 10.0.0.1-10, or a prefix such as 10.0.0.0/24";
        let text = w.text.as_str();
        let parsed = if let Some((a, n)) = text.split_once('-') {
            a.parse::<IpAddr>().ok().and_then(|first| {
                let last = match first {
                    IpAddr::V4(v4) => {
                        let end = n.parse::<u8>().ok()?;
                        let mut o = v4.octets();
                        (end >= o[3]).then(|| {
                            o[3] = end;
                            IpAddr::from(o)
                        })?
                    }
                    IpAddr::V6(v6) => {
                        let end = u16::from_str_radix(n, 16).ok()?;
                        let mut s = v6.segments();
                        (end >= s[7]).then(|| {
                            s[7] = end;
                            IpAddr::from(s)
                        })?
                    }
                };
                Some((first, last))
            })
        } else if let Some((a, l)) = text.split_once('/') {
            a.parse::<IpAddr>().ok().and_then(|addr| {
                let len = l.parse::<u32>().ok()?;
                match addr {
                    IpAddr::V4(v4) if len <= 32 => {
                        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                        let base = u32::from(v4) & mask;
                        Some((IpAddr::from(Ipv4Addr::from(base)), IpAddr::from(Ipv4Addr::from(base | !mask))))
                    }
                    IpAddr::V6(v6) if len <= 128 => {
                        let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                        let base = u128::from(v6) & mask;
                        Some((IpAddr::from(Ipv6Addr::from(base)), IpAddr::from(Ipv6Addr::from(base | !mask))))
                    }
                    _ => None,
                }
            })
        } else {
            text.parse::<IpAddr>().ok().map(|a| (a, a))
        };
        if parsed.is_none() {
            self.invalid("virtual_server_group entry", w, expected);
        }
        parsed
    }

    /// Parses `KEYWORD IP PORT` (real_server, sorry_server); the port may be omitted when
    /// `port_optional` (it is then 0).
    fn endpoint(&mut self, node: &Node, kw: &Word, port_optional: bool) -> Option<(IpAddr, u16, Word)> {
        let args = rest(node);
        if port_optional && args.len() == 1 {
            let ip = self.ip(&args[0])?;
            return Some((ip, 0, args[0].clone()));
        }
        let usage = format!("{} IP PORT", kw.text);
        let [ip, port] = self.args(node, kw, &usage, 2)? else {
            return None;
        };
        let (ip, port_value) = (self.ip(ip), self.port(port));
        Some((ip?, port_value?, port.clone()))
    }

    fn virtual_server(&mut self, node: &Node, kw: &Word) -> Option<VirtualServer> {
        let target = match node.words.get(1).map(|w| w.text.as_str()) {
            Some("fwmark") => {
                let usage = "virtual_server fwmark N";
                self.args(node, kw, usage, 2)
                    .and_then(|a| a.get(1))
                    .and_then(|w| self.uint_in("fwmark", w, 1, u32::MAX))
                    .map(VsTarget::Fwmark)
            }
            Some("group") => {
                let usage = "virtual_server group NAME";
                self.args(node, kw, usage, 2).and_then(|a| a.get(1)).map(|w| VsTarget::Group(w.text.clone()))
            }
            _ => match self.endpoint(node, kw, false) {
                Some((_, 0, port)) => {
                    self.error(&port, "port 0 (all ports) is not supported".to_string());
                    None
                }
                Some((addr, port, _)) => Some(VsTarget::Addr(addr, port)),
                None => None,
            },
        };
        let Some(children) = &node.children else {
            self.error(kw, "`virtual_server` needs a `{ ... }` block".to_string());
            return None;
        };
        let (addr, port) = match target {
            Some(VsTarget::Addr(a, p)) => (a, p),
            _ => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        };
        let ip_form = !matches!(node.words.get(1).map(|w| w.text.as_str()), Some("fwmark" | "group"));
        let placeholder = if ip_form { VsTarget::Addr(addr, port) } else { VsTarget::Fwmark(0) };
        let mut vs = VirtualServer {
            addr,
            port,
            target: target.clone().unwrap_or(placeholder),
            protocol: Protocol::default(),
            scheduler: Scheduler::default(),
            kind: LbKind::default(),
            persistence_timeout: None,
            persistence_granularity: None,
            delay_loop: None,
            real_servers: Vec::new(),
            sorry_server: None,
            sorry_server_inhibit: false,
            sorry_server_lvs_method: None,
            ha_suspend: false,
            virtualhost: None,
            alpha: false,
            omega: false,
            quorum: 1,
            hysteresis: 0,
            quorum_up: None,
            quorum_down: None,
            one_packet_scheduler: false,
            ip_family: None,
            persistence_engine: None,
            scheduler_flags: Vec::new(),
            tunnel: None,
            check_defaults: CheckDefaults::default(),
            inhibit_on_failure: false,
            smtp_alert: None,
            snmp_name: None,
            location: loc(kw),
        };
        // Keep checking the body even when the header is bad.
        let family = match &target {
            Some(VsTarget::Addr(a, _)) => Some(a.is_ipv6()),
            _ => None,
        };
        for child in children {
            self.vs_statement(&mut vs, child, family);
        }
        target.map(|_| vs)
    }

    fn lb_kind(&mut self, node: &Node, kw: &Word) -> Option<(LbKind, Option<Tunnel>)> {
        let args = rest(node);
        let Some(w) = args.first() else {
            self.error(kw, format!("missing argument for `{}`: expected `{} DR|NAT|TUN`", kw.text, kw.text));
            return None;
        };
        let kind = match w.text.to_ascii_uppercase().as_str() {
            "DR" => LbKind::Dr,
            "NAT" => LbKind::Nat,
            "TUN" => LbKind::Tun,
            _ => {
                self.invalid(&kw.text, w, "DR, NAT or TUN");
                return None;
            }
        };
        let more = args.get(1..).unwrap_or_default();
        if kind != LbKind::Tun || more.is_empty() {
            if let Some(extra) = more.first() {
                self.warn(extra, format!("unexpected extra argument `{}`; ignored", extra.text));
            }
            return Some((kind, None));
        }
        let mut t = Tunnel { kind: "ipip".into(), port: None, checksum: None };
        let mut i = 0;
        while let Some(opt) = more.get(i) {
            i += 1;
            match opt.text.as_str() {
                "type" => {
                    let Some(v) = more.get(i) else {
                        self.error(opt, "missing value for `type`: expected ipip, gue or gre".into());
                        return None;
                    };
                    i += 1;
                    match v.text.as_str() {
                        "ipip" | "gue" | "gre" => t.kind = v.text.clone(),
                        _ => {
                            self.invalid("tunnel type", v, "ipip, gue or gre");
                            return None;
                        }
                    }
                }
                "port" => {
                    let Some(v) = more.get(i) else {
                        self.error(opt, "missing value for `port`: expected 1-65535".into());
                        return None;
                    };
                    i += 1;
                    t.port = Some(self.port(v)?);
                }
                "nocsum" | "csum" | "remcsum" => t.checksum = Some(opt.text.clone()),
                _ => self.warn(opt, format!("unknown lvs_method option `{}`; ignored", opt.text)),
            }
        }
        if t.kind == "gue" && t.port.is_none() {
            self.error(w, "a GUE tunnel needs `port N`".into());
            return None;
        }
        Some((kind, Some(t)))
    }

    /// Checker defaults shared by virtual_server, real_server and checkers. True if handled.
    fn check_default(&mut self, d: &mut CheckDefaults, node: &Node, name: &str) -> bool {
        match name {
            "connect_timeout" => d.connect_timeout = self.timer(node).or(d.connect_timeout),
            "retry" | "nb_get_retry" => d.retry = self.num(node, 0, u32::MAX).or(d.retry),
            "delay_before_retry" => d.delay_before_retry = self.timer(node).or(d.delay_before_retry),
            "warmup" => d.warmup = self.timer(node).or(d.warmup),
            "delay_loop" => d.delay_loop = self.timer(node).or(d.delay_loop),
            _ => return false,
        }
        true
    }

    fn vs_statement(&mut self, vs: &mut VirtualServer, node: &Node, v6: Option<bool>) {
        let Some(kw) = keyword(node) else { return };
        let name = kw.text.as_str();
        let usage = |v: &str| format!("{name} {v}");
        match name {
            "lb_algo" | "lvs_sched" => {
                let args = rest(node);
                let Some(w) = args.first() else {
                    self.error(kw, format!("missing argument for `{name}`: expected `{}`", usage("SCHEDULER")));
                    return;
                };
                match Scheduler::ALL.into_iter().find(|s| s.name().eq_ignore_ascii_case(&w.text)) {
                    Some(s) => vs.scheduler = s,
                    None => {
                        let names: Vec<&str> = Scheduler::ALL.iter().map(Scheduler::name).collect();
                        self.invalid(name, w, &format!("one of {}", names.join(", ")))
                    }
                }
                for flag in args.get(1..).unwrap_or_default() {
                    if SCHED_FLAGS.contains(&flag.text.as_str()) {
                        vs.scheduler_flags.push(flag.text.clone());
                    } else {
                        self.warn(flag, format!("unexpected extra argument `{}`; ignored", flag.text));
                    }
                }
            }
            "hashed" | "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" => {
                vs.scheduler_flags.push(name.to_string())
            }
            "lb_kind" | "lvs_method" => {
                if let Some((kind, tunnel)) = self.lb_kind(node, kw) {
                    (vs.kind, vs.tunnel) = (kind, tunnel);
                }
            }
            "protocol" => {
                let Some([w]) = self.args(node, kw, &usage("TCP|UDP|SCTP"), 1) else {
                    return;
                };
                match w.text.to_ascii_uppercase().as_str() {
                    "TCP" => vs.protocol = Protocol::Tcp,
                    "UDP" => vs.protocol = Protocol::Udp,
                    "SCTP" => vs.protocol = Protocol::Sctp,
                    _ => self.invalid(name, w, "TCP, UDP or SCTP"),
                }
            }
            "persistence_timeout" => match node.words.get(1) {
                None => vs.persistence_timeout = Some(DEFAULT_PERSISTENCE_TIMEOUT),
                Some(_) => {
                    let Some([w]) = self.args(node, kw, &usage("SECONDS"), 1) else {
                        return;
                    };
                    vs.persistence_timeout = self.uint(name, w, u32::MAX).or(vs.persistence_timeout);
                }
            },
            "persistence_granularity" => {
                let Some([w]) = self.args(node, kw, &usage("NETMASK"), 1) else {
                    return;
                };
                // keepalived takes a netmask for IPv4 and a prefix length for IPv6.
                let mask_ok = v6 != Some(true) && is_ipv4_netmask(&w.text);
                let prefix_ok = v6 != Some(false) && w.text.parse::<u8>().is_ok_and(|p| (1..=128).contains(&p));
                match (mask_ok || prefix_ok, v6) {
                    (true, _) => vs.persistence_granularity = Some(w.text.clone()),
                    (false, Some(true)) => self.invalid(name, w, "an IPv6 prefix length 1-128"),
                    (false, Some(false)) => self.invalid(name, w, "an IPv4 netmask such as 255.255.255.0"),
                    (false, None) => self.invalid(name, w, "an IPv4 netmask or an IPv6 prefix length"),
                }
            }
            "persistence_engine" => vs.persistence_engine = self.text(node, "NAME"),
            "delay_loop" => {
                let Some([w]) = self.args(node, kw, &usage("SECONDS"), 1) else {
                    return;
                };
                vs.delay_loop = self.uint(name, w, u32::MAX).or(vs.delay_loop);
                vs.check_defaults.delay_loop = vs.delay_loop.map(|s| Duration::from_secs(s.into()));
            }
            "sorry_server" => {
                if let Some((addr, port, _)) = self.endpoint(node, kw, false) {
                    vs.sorry_server = Some((addr, port));
                }
            }
            "sorry_server_inhibit" => self.set_flag(node, &mut vs.sorry_server_inhibit),
            "sorry_server_lvs_method" => {
                if let Some((kind, _)) = self.lb_kind(node, kw) {
                    vs.sorry_server_lvs_method = Some(kind);
                }
            }
            "ha_suspend" => self.set_flag(node, &mut vs.ha_suspend),
            "virtualhost" => vs.virtualhost = self.text(node, "HOST"),
            "alpha" => self.set_flag(node, &mut vs.alpha),
            "omega" => self.set_flag(node, &mut vs.omega),
            "quorum" => vs.quorum = self.num(node, 1, u32::MAX).unwrap_or(vs.quorum),
            "hysteresis" => vs.hysteresis = self.num(node, 0, u32::MAX).unwrap_or(vs.hysteresis),
            "quorum_up" => vs.quorum_up = self.command(node),
            "quorum_down" => vs.quorum_down = self.command(node),
            "ops" | "one_packet_scheduler" => self.set_flag(node, &mut vs.one_packet_scheduler),
            "ip_family" => {
                if let Some(w) = self.arg1(node, "inet|inet6") {
                    match w.text.as_str() {
                        "inet" => vs.ip_family = Some(IpFamily::Inet),
                        "inet6" => vs.ip_family = Some(IpFamily::Inet6),
                        _ => self.invalid("ip_family", w, "inet or inet6"),
                    }
                }
            }
            "inhibit_on_failure" => self.set_flag(node, &mut vs.inhibit_on_failure),
            "smtp_alert" => vs.smtp_alert = self.flag(node),
            "snmp_name" => vs.snmp_name = self.text(node, "NAME"),
            "real_server" => {
                let port_optional = !matches!(vs.target, VsTarget::Addr(..));
                if let Some(rs) = self.real_server(node, kw, port_optional) {
                    vs.real_servers.push(rs);
                }
            }
            _ if self.check_default(&mut vs.check_defaults, node, name) => {}
            _ => self.unsupported_or_unknown(kw, &[]),
        }
    }

    fn real_server(&mut self, node: &Node, kw: &Word, port_optional: bool) -> Option<RealServer> {
        let endpoint = self.endpoint(node, kw, port_optional);
        let mut rs = RealServer {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            weight: 1,
            inhibit_on_failure: None,
            notify_up: None,
            notify_down: None,
            uthreshold: None,
            lthreshold: None,
            lvs_method: None,
            tunnel: None,
            alpha: None,
            smtp_alert: None,
            virtualhost: None,
            check_defaults: CheckDefaults::default(),
            checkers: Vec::new(),
            location: loc(kw),
        };
        for child in node.children.iter().flatten() {
            let Some(ckw) = keyword(child) else {
                continue;
            };
            let name = ckw.text.as_str();
            match name {
                "weight" => {
                    if let Some([w]) = self.args(child, ckw, "weight 0-65535", 1) {
                        rs.weight = self.uint("weight", w, u16::MAX.into()).unwrap_or(rs.weight);
                    }
                }
                "inhibit_on_failure" => rs.inhibit_on_failure = self.flag(child),
                "notify_up" => rs.notify_up = self.command(child),
                "notify_down" => rs.notify_down = self.command(child),
                "uthreshold" => rs.uthreshold = self.num(child, 0, u32::MAX),
                "lthreshold" => rs.lthreshold = self.num(child, 0, u32::MAX),
                "lvs_method" => {
                    if let Some((kind, tunnel)) = self.lb_kind(child, ckw) {
                        (rs.lvs_method, rs.tunnel) = (Some(kind), tunnel);
                    }
                }
                "alpha" => rs.alpha = self.flag(child),
                "smtp_alert" => rs.smtp_alert = self.flag(child),
                "virtualhost" => rs.virtualhost = self.text(child, "HOST"),
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "SMTP_CHECK" | "DNS_CHECK" | "UDP_CHECK"
                | "PING_CHECK" | "ICMP_CHECK" => {
                    if let Some(c) = self.checker(child, ckw) {
                        rs.checkers.push(c);
                    }
                }
                _ if self.check_default(&mut rs.check_defaults, child, name) => {}
                _ => self.unsupported_or_unknown(ckw, &[]),
            }
        }
        let (addr, port, _) = endpoint?;
        (rs.addr, rs.port) = (addr, port);
        Some(rs)
    }

    fn new_checker(kind: CheckKind, kw: &Word) -> Checker {
        Checker {
            kind,
            connect_ip: None,
            connect_port: None,
            bindto: None,
            bind_if: None,
            bind_port: None,
            fwmark: None,
            alpha: None,
            log_all_failures: None,
            timing: CheckDefaults::default(),
            location: loc(kw),
        }
    }

    /// Options every checker takes (check_api.c). True if handled.
    fn check_common(&mut self, c: &mut Checker, node: &Node, name: &str) -> bool {
        match name {
            "connect_ip" => c.connect_ip = self.ip_arg(node),
            "connect_port" => c.connect_port = self.port_arg(node),
            "bindto" => c.bindto = self.ip_arg(node),
            "bind_if" => c.bind_if = self.text(node, "INTERFACE"),
            "bind_port" => c.bind_port = self.port_arg(node),
            "fwmark" => c.fwmark = self.num(node, 0, u32::MAX),
            "alpha" => c.alpha = self.flag(node),
            "log_all_failures" => c.log_all_failures = self.flag(node),
            _ => return self.check_default(&mut c.timing, node, name),
        }
        true
    }

    fn checker(&mut self, node: &Node, kw: &Word) -> Option<Checker> {
        let kind = match kw.text.as_str() {
            "TCP_CHECK" => CheckKind::Tcp,
            "HTTP_GET" => CheckKind::Http(HttpCheck::default()),
            "SSL_GET" => CheckKind::Ssl(HttpCheck::default()),
            "MISC_CHECK" => CheckKind::Misc(MiscCheck::default()),
            "SMTP_CHECK" => CheckKind::Smtp(SmtpCheck::default()),
            "DNS_CHECK" => CheckKind::Dns(DnsCheck { query_type: DnsType::Soa, name: ".".into() }),
            "UDP_CHECK" => CheckKind::Udp(UdpCheck::default()),
            _ => CheckKind::Ping,
        };
        let mut c = Self::new_checker(kind, kw);
        if let Some(extra) = node.words.get(1) {
            self.warn(extra, format!("unexpected extra argument `{}`; ignored", extra.text));
        }
        for child in node.children.iter().flatten() {
            let Some(ckw) = keyword(child) else { continue };
            let name = ckw.text.as_str();
            if self.check_common(&mut c, child, name) {
                continue;
            }
            let handled = match &mut c.kind {
                CheckKind::Http(h) | CheckKind::Ssl(h) => self.http_option(h, child, ckw),
                CheckKind::Misc(m) => self.misc_option(m, child, name),
                CheckKind::Smtp(s) => self.smtp_option(s, child, ckw),
                CheckKind::Dns(d) => self.dns_option(d, child, name),
                CheckKind::Udp(u) => self.udp_option(u, child, ckw),
                CheckKind::Tcp | CheckKind::Ping => false,
            };
            if !handled {
                self.unsupported_or_unknown(ckw, &[]);
            }
        }
        if let CheckKind::Misc(MiscCheck { path: None, .. }) = c.kind {
            self.error(kw, "MISC_CHECK needs `misc_path COMMAND`".into());
            return None;
        }
        Some(c)
    }

    fn http_option(&mut self, h: &mut HttpCheck, node: &Node, kw: &Word) -> bool {
        match kw.text.as_str() {
            "url" => {
                if let Some(block) = self.block(node, kw) {
                    let url = self.url(block, kw);
                    h.urls.push(url);
                }
            }
            "http_protocol" => {
                if let Some(w) = self.arg1(node, "1.0|1.0C|1.1") {
                    match w.text.as_str() {
                        "1.0" | "1.0C" | "1.0c" | "1.1" => h.http_protocol = Some(w.text.to_ascii_uppercase()),
                        _ => self.invalid("http_protocol", w, "1.0, 1.0C or 1.1"),
                    }
                }
            }
            "virtualhost" => h.virtualhost = self.text(node, "HOST"),
            "fast_recovery" => h.fast_recovery = self.flag(node),
            "enable_sni" => h.enable_sni = self.flag(node),
            "sni_name" => h.sni_name = self.text(node, "NAME"),
            "tls_compliant" => h.tls_compliant = self.flag(node),
            _ => return false,
        }
        true
    }

    fn url(&mut self, block: &[Node], kw: &Word) -> Url {
        let mut url = Url {
            path: None,
            digest: None,
            status_codes: Vec::new(),
            virtualhost: None,
            regex: None,
            regex_no_match: false,
            location: loc(kw),
        };
        for node in block {
            let Some(ukw) = keyword(node) else { continue };
            match ukw.text.as_str() {
                "path" => url.path = self.text(node, "PATH"),
                "digest" => {
                    if let Some(w) = self.arg1(node, "MD5") {
                        if w.text.len() == 32 && w.text.bytes().all(|b| b.is_ascii_hexdigit()) {
                            url.digest = Some(w.text.to_ascii_lowercase());
                        } else {
                            self.invalid("digest", w, "an MD5 digest of 32 hex digits");
                        }
                    }
                }
                "status_code" => {
                    let args = rest(node);
                    if args.is_empty() {
                        let usage = "status_code CODE|FROM-TO ...";
                        self.error(ukw, format!("missing argument for `status_code`: expected `{usage}`"));
                    }
                    for w in args {
                        for part in w.text.split(',').filter(|p| !p.is_empty()) {
                            match parse_status(part) {
                                Some(r) => url.status_codes.push(r),
                                None => self.invalid(
                                    "status_code",
                                    w,
                                    "HTTP status codes 100-599 or ranges such as 200-299",
                                ),
                            }
                        }
                    }
                }
                "virtualhost" => url.virtualhost = self.text(node, "HOST"),
                "regex" => url.regex = self.text(node, "REGEX"),
                "regex_no_match" => url.regex_no_match = true,
                _ => self.unsupported_or_unknown(
                    ukw,
                    &["regex_options", "regex_stack", "regex_min_offset", "regex_max_offset"],
                ),
            }
        }
        url
    }

    fn misc_option(&mut self, m: &mut MiscCheck, node: &Node, name: &str) -> bool {
        match name {
            "misc_path" => m.path = self.command(node),
            "misc_timeout" => m.timeout = self.timer(node),
            "misc_dynamic" => m.dynamic = true,
            "user" => m.user = self.user(node),
            _ => return false,
        }
        true
    }

    fn smtp_option(&mut self, s: &mut SmtpCheck, node: &Node, kw: &Word) -> bool {
        match kw.text.as_str() {
            "helo_name" => s.helo_name = self.text(node, "NAME"),
            "host" => {
                let mut host = Self::new_checker(CheckKind::Tcp, kw);
                if let Some(block) = self.block(node, kw) {
                    for child in block {
                        let Some(hkw) = keyword(child) else { continue };
                        if !self.check_common(&mut host, child, &hkw.text) {
                            self.unsupported_or_unknown(hkw, &[]);
                        }
                    }
                    s.hosts.push(host);
                }
            }
            _ => return false,
        }
        true
    }

    fn dns_option(&mut self, d: &mut DnsCheck, node: &Node, name: &str) -> bool {
        match name {
            "type" => {
                if let Some(w) = self.arg1(node, "TYPE") {
                    d.query_type = match w.text.to_ascii_uppercase().as_str() {
                        "A" => DnsType::A,
                        "NS" => DnsType::Ns,
                        "CNAME" => DnsType::Cname,
                        "SOA" => DnsType::Soa,
                        "MX" => DnsType::Mx,
                        "TXT" => DnsType::Txt,
                        "AAAA" => DnsType::Aaaa,
                        _ => {
                            self.invalid("type", w, "A, NS, CNAME, SOA, MX, TXT or AAAA");
                            d.query_type
                        }
                    }
                }
            }
            "name" => d.name = self.text(node, "NAME").unwrap_or_else(|| d.name.clone()),
            _ => return false,
        }
        true
    }

    fn udp_option(&mut self, u: &mut UdpCheck, node: &Node, kw: &Word) -> bool {
        match kw.text.as_str() {
            "payload" => {
                if let Some(w) = self.arg1(node, "HEX") {
                    match parse_hex(&w.text) {
                        Some(bytes) => u.payload = Some(bytes),
                        None => self.invalid("payload", w, "an even number of hex digits"),
                    }
                }
            }
            "require_reply" => {
                u.require_reply = true;
                if let Some(w) = rest(node).first() {
                    if w.text.bytes().all(|b| b.is_ascii_hexdigit() || b == b'X' || b == b'x')
                        && w.text.len().is_multiple_of(2)
                    {
                        u.reply_pattern = Some(w.text.clone());
                    } else {
                        self.invalid("require_reply", w, "hex digits, with X for any digit");
                    }
                }
            }
            "min_reply_length" => u.min_reply_length = self.num(node, 0, u32::MAX),
            "max_reply_length" => u.max_reply_length = self.num(node, 0, u32::MAX),
            _ => return false,
        }
        true
    }

    // ---- cross-block checks -----------------------------------------------------------------

    fn warn_at(&mut self, location: &Location, message: String) {
        self.warnings.push(Diagnostic { location: location.clone(), message });
    }

    /// Duplicate virtual and real servers (errors); dangling references (warnings, as keepalived
    /// drops the reference and carries on).
    fn validate(&mut self, config: &Config) {
        let mut seen_vs: HashMap<(IpAddr, u16, Protocol), u32> = HashMap::new();
        for vs in &config.virtual_servers {
            let key = (vs.addr, vs.port, vs.protocol);
            if let Some(first) = seen_vs.insert(key, vs.location.line) {
                seen_vs.insert(key, first);
                let proto = format!("{:?}", vs.protocol).to_uppercase();
                let message = format!(
                    "duplicate virtual server {} {proto} (first defined on line {first})",
                    SocketAddr::new(vs.addr, vs.port)
                );
                self.errors.push(Diagnostic { location: vs.location.clone(), message });
            }
        }
        for vs in config.virtual_servers.iter().chain(&config.other_virtual_servers) {
            let mut seen_rs: HashMap<(IpAddr, u16), u32> = HashMap::new();
            for rs in &vs.real_servers {
                if let Some(first) = seen_rs.insert((rs.addr, rs.port), rs.location.line) {
                    seen_rs.insert((rs.addr, rs.port), first);
                    let message = format!(
                        "duplicate real server {} in this virtual server (first defined on line {first})",
                        SocketAddr::new(rs.addr, rs.port)
                    );
                    self.errors.push(Diagnostic { location: rs.location.clone(), message });
                }
            }
            if let VsTarget::Group(name) = &vs.target
                && !config.virtual_server_groups.iter().any(|g| &g.name == name)
            {
                let message = format!("virtual_server group {name}: no virtual_server_group {name} is defined");
                self.warn_at(&vs.location, message);
            }
        }
        for i in &config.vrrp_instances {
            if i.virtual_router_id.is_none() {
                let message =
                    format!("vrrp_instance {} has no virtual_router_id; keepalived would drop the instance", i.name);
                self.warn_at(&i.location, message);
            }
            for t in &i.track_script {
                if !config.vrrp_scripts.iter().any(|s| s.name == t.name) {
                    let message =
                        format!("vrrp_instance {}: track_script {} is not a defined vrrp_script", i.name, t.name);
                    self.warn_at(&i.location, message);
                }
            }
        }
        for g in &config.vrrp_sync_groups {
            for member in &g.group {
                if !config.vrrp_instances.iter().any(|i| &i.name == member) {
                    let message = format!("vrrp_sync_group {}: {member} is not a defined vrrp_instance", g.name);
                    self.warn_at(&g.location, message);
                }
            }
        }
    }
}

/// `<TIMER>`: `N` or `N.F`, seconds, at most u32::MAX; sub-microsecond digits are dropped.
pub(super) fn parse_timer(text: &str) -> Option<Duration> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) || (text.contains('.') && frac.is_empty() && int.is_empty()) {
        return None;
    }
    let secs: u64 = if int.is_empty() { 0 } else { int.parse::<u32>().ok()?.into() };
    let mut micros = 0u32;
    for (i, b) in frac.bytes().take(6).enumerate() {
        micros += u32::from(b - b'0') * 10u32.pow(5 - i as u32);
    }
    Some(Duration::from_secs(secs) + Duration::from_micros(micros.into()))
}

/// `200` or `200-299`, within 100-599.
fn parse_status(text: &str) -> Option<(u16, u16)> {
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let code = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u16>().ok())
            .flatten()
            .filter(|c| (100..=599).contains(c))
    };
    let (lo, hi) = (code(lo)?, code(hi)?);
    (lo <= hi).then_some((lo, hi))
}

fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A dotted-quad with contiguous leading one bits (0.0.0.0 excluded).
fn is_ipv4_netmask(text: &str) -> bool {
    text.parse::<Ipv4Addr>().is_ok_and(|m| {
        let bits = u32::from(m);
        bits != 0 && bits.leading_ones() + bits.trailing_zeros() == 32
    })
}
