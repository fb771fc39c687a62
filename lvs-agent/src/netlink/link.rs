//! Interface lookup (RTM_GETLINK).

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use tokio::sync::mpsc;

use super::{Netlink, NetlinkError};

/// What the agent needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// All zeroes for interfaces without an Ethernet address (lo, tun).
    pub mac: [u8; 6],
    /// IFF_UP: administratively up.
    pub up: bool,
}

impl LinkInfo {
    pub(crate) fn from_message(msg: &LinkMessage) -> LinkInfo {
        let mut name = String::new();
        let mut mac = [0u8; 6];
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name.clone_from(n),
                LinkAttribute::Address(a) => {
                    if let Ok(a) = <[u8; 6]>::try_from(a.as_slice()) {
                        mac = a;
                    }
                }
                _ => {}
            }
        }
        LinkInfo { index: msg.header.index, name, mac, up: msg.header.flags.contains(LinkFlags::Up) }
    }
}

/// Administratively up with carrier.
fn usable(msg: &LinkMessage) -> bool {
    msg.header.flags.contains(LinkFlags::Up) && msg.header.flags.contains(LinkFlags::LowerUp)
}

impl Netlink {
    /// Looks an interface up by name.
    pub async fn link_by_name(&self, name: &str) -> Result<LinkInfo, NetlinkError> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(LinkInfo::from_message(&msg)),
            Ok(None) => Err(NetlinkError::NoSuchLink(name.to_string())),
            Err(e) => match NetlinkError::from_rtnl(format!("looking up interface `{name}`"), e) {
                // RTM_GETLINK with IFLA_IFNAME answers ENODEV for an unknown name.
                NetlinkError::Os { errno, .. } if errno == libc::ENODEV => {
                    Err(NetlinkError::NoSuchLink(name.to_string()))
                }
                other => Err(other),
            },
        }
    }

    /// Looks an interface up by index.
    pub(crate) async fn link_by_index(&self, index: u32) -> Result<LinkInfo, NetlinkError> {
        Ok(LinkInfo::from_message(&self.link_message_by_index(index).await?))
    }

    pub(crate) async fn link_message_by_index(&self, index: u32) -> Result<LinkMessage, NetlinkError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(NetlinkError::NoSuchIfindex(index)),
            Err(e) => match NetlinkError::from_rtnl(format!("looking up interface #{index}"), e) {
                NetlinkError::Os { errno, .. } if errno == libc::ENODEV => Err(NetlinkError::NoSuchIfindex(index)),
                other => Err(other),
            },
        }
    }

    /// Follows the link state (IFF_UP and IFF_LOWER_UP) of `indexes` (VRRP's
    /// track_interface): their state now, then each change, from an RTNLGRP_LINK
    /// subscription made before the state is read, so that no change is missed.
    pub async fn watch_links(
        &self,
        indexes: &[u32],
    ) -> Result<(HashMap<u32, bool>, mpsc::UnboundedReceiver<(u32, bool)>), NetlinkError> {
        let (connection, _handle, mut events) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
            .map_err(|e| NetlinkError::from_io("subscribing to link events", e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let wanted: Vec<u32> = indexes.to_vec();
        let conn = tokio::spawn(connection);
        tokio::spawn(async move {
            while let Some((msg, _)) = events.next().await {
                let (index, usable) = match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => (l.header.index, usable(&l)),
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => (l.header.index, false),
                    _ => continue,
                };
                if wanted.contains(&index) && tx.send((index, usable)).is_err() {
                    break;
                }
            }
            conn.abort();
        });
        let mut now = HashMap::new();
        for &index in indexes {
            now.insert(index, usable(&self.link_message_by_index(index).await?));
        }
        Ok((now, rx))
    }

    /// The interface's name for error messages; `#<index>` if it cannot be
    /// had (the error that follows says what went wrong anyway).
    pub(crate) async fn link_label(&self, index: u32) -> String {
        match self.link_by_index(index).await {
            Ok(link) => link.name,
            Err(_) => format!("interface #{index}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testns::{in_private_netns, ip};
    use super::super::{Netlink, NetlinkError};

    #[test]
    fn link_by_name_on_veth_and_missing() {
        if !lvs_tests::privilege::can_run("link_by_name_on_veth_and_missing") {
            return;
        }
        in_private_netns(|| async {
            ip(&["link", "add", "lvs-t0", "type", "veth", "peer", "name", "lvs-t1"]);
            ip(&["link", "set", "lvs-t0", "address", "02:00:5e:00:53:10"]);
            let nl = Netlink::connect().await.expect("netlink");

            let link = nl.link_by_name("lvs-t0").await.expect("lvs-t0");
            assert_eq!(link.name, "lvs-t0");
            assert_eq!(link.mac, [0x02, 0x00, 0x5e, 0x00, 0x53, 0x10]);
            assert!(!link.up);
            assert!(link.index > 1);

            ip(&["link", "set", "lvs-t0", "up"]);
            let link = nl.link_by_name("lvs-t0").await.expect("lvs-t0");
            assert!(link.up);
            let by_index = nl.link_by_index(link.index).await.expect("by index");
            assert_eq!(by_index, link);

            let err = nl.link_by_name("lvs-nope0").await.expect_err("missing");
            assert!(matches!(err, NetlinkError::NoSuchLink(_)), "{err:?}");
            assert_eq!(err.to_string(), "interface `lvs-nope0` not found");

            let err = nl.link_by_index(424_242).await.expect_err("missing");
            assert_eq!(err.to_string(), "interface with index 424242 not found");
        });
    }
}
