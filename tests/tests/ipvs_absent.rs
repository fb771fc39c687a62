//! A mixed config on a host whose kernel has no IPVS (these machines'): the NAT/TUN services
//! get one error naming module ip_vs, not repeated by the drift checks, and the DR service is
//! forwarded by XDP regardless. On a kernel with IPVS the same config is programmed instead
//! (the QEMU tier, `ipvs_vm.rs`, tests that in depth); the test says which case it met.

use std::time::Duration;

use lvs_agent::ipvs::netlink::GenlSocket;
use lvs_tests::{netns::Netns, privilege::can_run, process::Proc};

const CONF: &str = "virtual_server 10.9.0.100 80 {\n  lb_algo rr\n  lb_kind NAT\n  real_server 10.9.1.2 8080 {\n  }\n}\n\
                    virtual_server 10.9.0.101 80 {\n  lb_algo wrr\n  lb_kind TUN\n  real_server 10.9.2.2 80 {\n  }\n}\n\
                    virtual_server 10.9.0.102 80 {\n  lb_algo rr\n  lb_kind DR\n  real_server 127.0.0.2 80 {\n  }\n}\n";

const MISSING: &str = "kernel IPVS is not available (module ip_vs not loaded / not built): NAT/TUN services TCP \
                       10.9.0.100:80, TCP 10.9.0.101:80 cannot be programmed; DR services are forwarded by XDP as usual";

#[test]
fn nat_and_tun_without_kernel_ipvs_get_one_error_and_dr_goes_on() {
    if !can_run("nat_and_tun_without_kernel_ipvs_get_one_error_and_dr_goes_on") {
        return;
    }
    let ns = Netns::create("lvs-ipvs-none").unwrap();
    // Resolving the family is what the agent does first (it autoloads ip_vs where it exists).
    let kernel_has_ipvs = ns.within(|| GenlSocket::open_ipvs().is_ok()).unwrap();
    let conf = std::env::temp_dir().join("lvs-ipvs-none.conf");
    std::fs::write(&conf, CONF).unwrap();
    let agent = lvs_tests::process::agent_bin();
    let mut cmd = ns.cmd(agent.to_str().unwrap());
    cmd.args(["run", "-f", conf.to_str().unwrap(), "-i", "lo", "--xdp-mode", "generic", "--no-pin"]);
    cmd.args(["--metrics-address", "none", "--resolve-wait", "0", "--ipvs-check", "1"]);
    let mut proc = Proc::spawn("agent", &mut cmd).unwrap();
    proc.wait_for_line("forwarding", Duration::from_secs(30)).unwrap();
    if kernel_has_ipvs {
        eprintln!("this kernel has IPVS: checking that the NAT/TUN services were programmed instead");
        // Two services with one real server each: four requests.
        assert!(proc.said("kernel IPVS table brought to the configuration requests=4"), "not programmed");
    } else {
        // Said once, at start-up, before forwarding began...
        assert!(proc.said(MISSING), "no `{MISSING}` before forwarding");
        // ...and not again by the drift checks (one a second): none in the next three.
        let again = proc.wait_for_line("kernel IPVS is not available", Duration::from_millis(3500));
        assert!(again.is_err(), "the error was repeated: {again:?}");
    }
    // The DR service is served by XDP either way.
    let out = ns.cmd(agent.to_str().unwrap()).args(["list", "-n", "-i", "lo"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(list.contains("TCP  10.9.0.102:80 rr\n"), "{list}");
    let dr: Vec<&str> =
        list.lines().find(|l| l.contains("-> 127.0.0.2:80")).unwrap_or_default().split_whitespace().collect();
    assert_eq!(dr.get(2..4), Some(&["Route", "1"][..]), "{list}");
    assert_eq!(list.contains("10.9.0.100:80"), kernel_has_ipvs, "{list}");
    let (status, _) = proc.stop(libc::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_file(conf);
}
