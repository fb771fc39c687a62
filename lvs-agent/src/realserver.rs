//! `lvs-agent realserver up|down VIP`: prepares a host to be a direct-routing
//! real server, as operators do by hand (the classic LVS-DR `realserver`
//! script).
//!
//! In DR the director forwards frames unchanged but for the destination MAC,
//! so the real server must accept packets to the VIP: the VIP goes on `lo`.
//! It must not answer ARP for it, or it would steal the VIP from the director:
//! `arp_ignore=1` answers only for addresses of the receiving interface, and
//! `arp_announce=2` never uses the VIP as the source of its own ARP requests.
//! The kernel applies the maximum of `all` and the device's value for both
//! (IN_DEV_ARP_IGNORE / IN_DEV_ARP_ANNOUNCE), hence `all` does the work; `lo`
//! is set too because that is what the scripts do.
//! IPv6 needs nothing of that kind: ndisc only answers solicitations for
//! addresses of the interface they arrive on, never for addresses on `lo`.

use std::net::IpAddr;

use crate::netlink::{Netlink, NetlinkError};

const ARP_KNOBS: [&str; 4] = [
    "/proc/sys/net/ipv4/conf/all/arp_ignore",
    "/proc/sys/net/ipv4/conf/lo/arp_ignore",
    "/proc/sys/net/ipv4/conf/all/arp_announce",
    "/proc/sys/net/ipv4/conf/lo/arp_announce",
];
const ARP_ON: [&str; 4] = ["1", "1", "2", "2"];

fn host_prefix(vip: IpAddr) -> u8 {
    match vip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The VIP as /32 (/128 for v6) on `lo`; for IPv4
/// net.ipv4.conf.{all,lo}.arp_ignore=1 and arp_announce=2 (written to
/// /proc/sys of the current netns). Idempotent.
pub async fn up(nl: &Netlink, vip: IpAddr) -> Result<(), NetlinkError> {
    let lo = nl.link_by_name("lo").await?;
    if vip.is_ipv4() {
        // Before the address exists, so that the host never answers ARP for it.
        for (knob, value) in ARP_KNOBS.iter().zip(ARP_ON) {
            write_sysctl(knob, value)?;
        }
    }
    nl.add_address(lo.index, vip, host_prefix(vip)).await
}

/// Removes the VIP from lo; when no other non-loopback IPv4 address remains on
/// lo, resets arp_ignore/arp_announce on all and lo to 0 (what the operators'
/// realserver scripts do on stop).
pub async fn down(nl: &Netlink, vip: IpAddr) -> Result<(), NetlinkError> {
    let lo = nl.link_by_name("lo").await?;
    // The kernel only deletes an address given with its own prefix length,
    // and someone may have added the VIP by hand with another one.
    let prefixes: Vec<u8> =
        nl.addresses(lo.index).await?.into_iter().filter(|(a, _)| *a == vip).map(|(_, p)| p).collect();
    if prefixes.is_empty() {
        nl.del_address(lo.index, vip, host_prefix(vip)).await?;
    }
    for prefix in prefixes {
        nl.del_address(lo.index, vip, prefix).await?;
    }
    if vip.is_ipv4() {
        let other_vips =
            nl.addresses(lo.index).await?.into_iter().any(|(a, _)| matches!(a, IpAddr::V4(v4) if !v4.is_loopback()));
        if !other_vips {
            for knob in ARP_KNOBS {
                write_sysctl(knob, "0")?;
            }
        }
    }
    Ok(())
}

/// Written from the calling thread on purpose: /proc/sys/net resolves to the
/// network namespace of the task that opens it, so this must not move to a
/// blocking-pool thread that may live in another one.
fn write_sysctl(path: &str, value: &str) -> Result<(), NetlinkError> {
    std::fs::write(path, format!("{value}\n"))
        .map_err(|e| NetlinkError::from_io(format!("writing {value} to {path}"), e))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::{down, up};
    use crate::netlink::Netlink;
    use crate::netlink::testns::in_private_netns;

    fn knobs() -> [String; 4] {
        super::ARP_KNOBS
            .map(|path| std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().to_string())
    }

    #[test]
    fn up_down_v4_vip_and_arp_knobs() {
        if !lvs_tests::privilege::can_run("up_down_v4_vip_and_arp_knobs") {
            return;
        }
        in_private_netns(|| async {
            let nl = Netlink::connect().await.expect("netlink");
            let lo = nl.link_by_name("lo").await.expect("lo").index;
            let vip: IpAddr = "192.0.2.100".parse().expect("literal");
            let vip2: IpAddr = "192.0.2.101".parse().expect("literal");
            // Start from the state a host without VIPs has.
            for knob in super::ARP_KNOBS {
                std::fs::write(knob, "0\n").expect("reset");
            }
            assert_eq!(knobs(), ["0", "0", "0", "0"]);

            up(&nl, vip).await.expect("up");
            up(&nl, vip).await.expect("up again");
            up(&nl, vip2).await.expect("up second VIP");
            let addrs = nl.addresses(lo).await.expect("list");
            assert!(addrs.contains(&(vip, 32)), "{addrs:?}");
            assert!(addrs.contains(&(vip2, 32)), "{addrs:?}");
            assert_eq!(knobs(), ["1", "1", "2", "2"]);

            // Another VIP remains: the knobs stay.
            down(&nl, vip).await.expect("down");
            assert!(!nl.addresses(lo).await.expect("list").contains(&(vip, 32)));
            assert_eq!(knobs(), ["1", "1", "2", "2"]);

            down(&nl, vip2).await.expect("down last VIP");
            down(&nl, vip2).await.expect("down again");
            assert!(!nl.addresses(lo).await.expect("list").contains(&(vip2, 32)));
            assert_eq!(knobs(), ["0", "0", "0", "0"]);
        });
    }

    #[test]
    fn up_down_v6_vip() {
        if !lvs_tests::privilege::can_run("up_down_v6_vip") {
            return;
        }
        in_private_netns(|| async {
            let nl = Netlink::connect().await.expect("netlink");
            let lo = nl.link_by_name("lo").await.expect("lo").index;
            let vip: IpAddr = "2001:db8::100".parse().expect("literal");
            up(&nl, vip).await.expect("up");
            up(&nl, vip).await.expect("up again");
            assert!(nl.addresses(lo).await.expect("list").contains(&(vip, 128)));
            down(&nl, vip).await.expect("down");
            down(&nl, vip).await.expect("down again");
            assert!(!nl.addresses(lo).await.expect("list").contains(&(vip, 128)));
        });
    }

    #[test]
    fn down_removes_a_vip_added_with_another_prefix() {
        if !lvs_tests::privilege::can_run("down_removes_a_vip_added_with_another_prefix") {
            return;
        }
        in_private_netns(|| async {
            let nl = Netlink::connect().await.expect("netlink");
            let lo = nl.link_by_name("lo").await.expect("lo").index;
            let vip: IpAddr = "192.0.2.100".parse().expect("literal");
            nl.add_address(lo, vip, 24).await.expect("add /24");
            down(&nl, vip).await.expect("down");
            assert!(nl.addresses(lo).await.expect("list").iter().all(|(a, _)| *a != vip));
        });
    }
}
