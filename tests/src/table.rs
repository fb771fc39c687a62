//! Reads the agent's counters, which it prints in `ipvsadm -Ln --stats` layout on SIGTERM
//! (followed by its rates in `ipvsadm -Ln --rate` layout, which this skips).

use std::collections::BTreeMap;

/// One real server's row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RealServerRow {
    pub conns: u64,
    pub in_packets: u64,
}

/// Real server `addr:port` (`[addr]:port` for IPv6, as the agent prints it) -> its row. Figures are exact below 10^8 (ipvsadm's `print_largenum`),
/// which is far above anything a test sends; a row with a K/M/G figure is left out.
#[must_use]
pub fn by_real_server(table: &str) -> BTreeMap<String, RealServerRow> {
    table
        .lines()
        .skip_while(|l| !(l.starts_with("Prot ") && l.contains("Conns")))
        .take_while(|l| !(l.starts_with("Prot ") && l.contains("CPS")))
        .filter_map(|l| l.trim().strip_prefix("-> "))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = f.next()?.to_string();
            let conns = f.next()?.parse().ok()?;
            let in_packets = f.next()?.parse().ok()?;
            Some((addr, RealServerRow { conns, in_packets }))
        })
        .collect()
}

/// Real server `addr:port` -> connections (flows) the agent scheduled to it.
#[must_use]
pub fn conns_by_real_server(table: &str) -> BTreeMap<String, u64> {
    by_real_server(table).into_iter().map(|(a, r)| (a, r.conns)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_stats_table_only() {
        let out = "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
                   \x20 -> RemoteAddress:Port\n\
                   TCP  10.77.0.100:80                       3       15        0      900        0\n\
                   \x20 -> 10.77.0.11:80                        3       15        0      900        0\n\n\
                   Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n\
                   \x20 -> RemoteAddress:Port\n\
                   TCP  10.77.0.100:80                       1        7        0     3600        0\n\
                   \x20 -> 10.77.0.11:80                        1        7        0     3600        0\n";
        assert_eq!(by_real_server(out)["10.77.0.11:80"], RealServerRow { conns: 3, in_packets: 15 });
    }

    #[test]
    fn reads_ipv6_rows_with_brackets() {
        // The agent prints IPv6 sockets as [addr]:port (lvs_agent::desired::socket).
        let out = "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
                   \x20 -> RemoteAddress:Port\n\
                   TCP  [fd00:77::100]:80                   7       40        0     2600        0\n\
                   \x20 -> [fd00:77::11]:80                    4       22        0     1400        0\n\
                   \x20 -> [fd00:77::12]:80                    3       18        0     1200        0\n";
        let rows = conns_by_real_server(out);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows["[fd00:77::11]:80"], 4);
        assert_eq!(rows["[fd00:77::12]:80"], 3);
    }
}
