//! Reads the agent's counters, which it prints in `ipvsadm -Ln --stats` layout on SIGTERM.

use std::collections::BTreeMap;

/// One real server's row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RealServerRow {
    pub conns: u64,
    pub in_packets: u64,
}

/// Real server `addr:port` -> its row. Figures are exact below 10^8 (ipvsadm's `print_largenum`),
/// which is far above anything a test sends; a row with a K/M/G figure is left out.
#[must_use]
pub fn by_real_server(table: &str) -> BTreeMap<String, RealServerRow> {
    table
        .lines()
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
