//! Interface addresses (RTM_NEWADDR / RTM_DELADDR / RTM_GETADDR).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::AddressMessageBuilder;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, CacheInfo};

use super::{Netlink, NetlinkError, cidr};

impl Netlink {
    /// Adds `addr/prefix_len` to the interface. Already present is success,
    /// so that `realserver up` can be run again.
    pub async fn add_address(&self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
        // The request carries NLM_F_EXCL, so an existing address is EEXIST.
        match self.handle.address().add(ifindex, addr, prefix_len).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let context = format!("adding {} to {}", cidr(addr, prefix_len), self.link_label(ifindex).await);
                match NetlinkError::from_rtnl(context, e) {
                    NetlinkError::Os { errno, .. } if errno == libc::EEXIST => Ok(()),
                    other => Err(other),
                }
            }
        }
    }

    /// Adds a VRRP virtual address as keepalived does: IPv6 ones without duplicate address
    /// detection (the address moves between routers on purpose, and a tentative one would not
    /// be reachable for a second) and deprecated (preferred lifetime 0), so that the host
    /// does not pick it as the source of its own connections. Already present is success.
    pub async fn add_vip(&self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
        let mut req = self.handle.address().add(ifindex, addr, prefix_len);
        if addr.is_ipv6() {
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            let mut lifetimes = CacheInfo::default();
            lifetimes.ifa_preferred = 0;
            lifetimes.ifa_valid = u32::MAX;
            msg.attributes.push(AddressAttribute::CacheInfo(lifetimes));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let context = format!("adding {} to {}", cidr(addr, prefix_len), self.link_label(ifindex).await);
                match NetlinkError::from_rtnl(context, e) {
                    NetlinkError::Os { errno, .. } if errno == libc::EEXIST => Ok(()),
                    other => Err(other),
                }
            }
        }
    }

    /// Removes `addr/prefix_len` from the interface. Absent is success.
    pub async fn del_address(&self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
        let message = match addr {
            IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new().index(ifindex).address(a, prefix_len).build(),
            IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new().index(ifindex).address(a, prefix_len).build(),
        };
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let context = format!("removing {} from {}", cidr(addr, prefix_len), self.link_label(ifindex).await);
                match NetlinkError::from_rtnl(context, e) {
                    // inet_rtm_deladdr() and inet6_addr_del() both answer
                    // EADDRNOTAVAIL when no such address is configured.
                    NetlinkError::Os { errno, .. } if errno == libc::EADDRNOTAVAIL => Ok(()),
                    other => Err(other),
                }
            }
        }
    }

    /// The addresses configured on the interface, with their prefix lengths.
    pub async fn addresses(&self, ifindex: u32) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
        let mut dump = self.handle.address().get().set_link_index_filter(ifindex).execute();
        let mut out = Vec::new();
        loop {
            let msg = match dump.try_next().await {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(e) => {
                    let context = format!("listing addresses of {}", self.link_label(ifindex).await);
                    return Err(NetlinkError::from_rtnl(context, e));
                }
            };
            // For IPv4, IFA_LOCAL is the interface's own address and IFA_ADDRESS
            // the peer's on point-to-point links; IPv6 only sends IFA_ADDRESS.
            let mut local = None;
            let mut address = None;
            for attr in &msg.attributes {
                match attr {
                    AddressAttribute::Local(a) => local = Some(*a),
                    AddressAttribute::Address(a) => address = Some(*a),
                    _ => {}
                }
            }
            if let Some(a) = local.or(address) {
                out.push((a, msg.header.prefix_len));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::super::Netlink;
    use super::super::testns::in_private_netns;

    #[test]
    fn add_del_list_are_idempotent_on_lo() {
        if !lvs_tests::privilege::can_run("add_del_list_are_idempotent_on_lo") {
            return;
        }
        in_private_netns(|| async {
            let nl = Netlink::connect().await.expect("netlink");
            let lo = nl.link_by_name("lo").await.expect("lo").index;
            for (addr, prefix) in [("192.0.2.100", 32u8), ("2001:db8::100", 128)] {
                let addr: IpAddr = addr.parse().expect("literal");
                assert!(!nl.addresses(lo).await.expect("list").contains(&(addr, prefix)));

                nl.add_address(lo, addr, prefix).await.expect("add");
                nl.add_address(lo, addr, prefix).await.expect("add again");
                let list = nl.addresses(lo).await.expect("list");
                assert_eq!(list.iter().filter(|a| **a == (addr, prefix)).count(), 1, "{list:?}");

                nl.del_address(lo, addr, prefix).await.expect("del");
                nl.del_address(lo, addr, prefix).await.expect("del again");
                assert!(!nl.addresses(lo).await.expect("list").contains(&(addr, prefix)));
            }
        });
    }

    #[test]
    fn vips_v6_are_added_without_dad_and_deprecated() {
        if !lvs_tests::privilege::can_run("vips_v6_are_added_without_dad_and_deprecated") {
            return;
        }
        in_private_netns(|| async {
            let nl = Netlink::connect().await.expect("netlink");
            let lo = nl.link_by_name("lo").await.expect("lo").index;
            let v6: IpAddr = "2001:db8::7".parse().expect("literal");
            nl.add_vip(lo, v6, 128).await.expect("add");
            nl.add_vip(lo, v6, 128).await.expect("add again");
            let out = std::process::Command::new("ip").args(["-6", "addr", "show", "dev", "lo"]).output().expect("ip");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = text.lines().find(|l| l.contains("2001:db8::7/128")).expect("added");
            assert!(line.contains("nodad") && line.contains("deprecated"), "{text}");
            let v4: IpAddr = "192.0.2.7".parse().expect("literal");
            nl.add_vip(lo, v4, 32).await.expect("add v4");
            assert!(nl.addresses(lo).await.expect("list").contains(&(v4, 32)));
        });
    }

    #[test]
    fn errors_name_the_address_and_interface() {
        if !lvs_tests::privilege::can_run("errors_name_the_address_and_interface") {
            return;
        }
        in_private_netns(|| async {
            let nl = Netlink::connect().await.expect("netlink");
            let addr: IpAddr = "192.0.2.100".parse().expect("literal");
            let err = nl.add_address(424_242, addr, 32).await.expect_err("no such ifindex");
            assert_eq!(err.to_string(), "adding 192.0.2.100/32 to interface #424242: No such device");
            assert_eq!(err.errno(), Some(libc::ENODEV));
        });
    }
}
