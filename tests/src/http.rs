//! A bounded HTTP client: N sequential connections, each with its own timeouts, inside a
//! namespace. Each real server of the test bed answers with its own name.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::netns::Netns;

#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Answers per real server name.
    pub by_server: BTreeMap<String, u64>,
    pub failures: u64,
    /// The first few failures, for the report.
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

impl Tally {
    #[must_use]
    pub fn answered(&self) -> u64 {
        self.by_server.values().sum()
    }
}

/// Opens `count` connections to `target` from `ns` (a new source port each), sends one
/// `GET /` each and tallies who answered. Stops early at `deadline`.
pub fn get_many(ns: &Netns, target: SocketAddr, count: u64, limit: Duration) -> Result<Tally> {
    ns.within(move || {
        let start = Instant::now();
        let mut tally = Tally::default();
        for _ in 0..count {
            if start.elapsed() > limit {
                tally.errors.push(format!("stopped at the {limit:?} limit"));
                break;
            }
            match get_once(target) {
                Ok(name) => *tally.by_server.entry(name).or_default() += 1,
                Err(e) => {
                    tally.failures += 1;
                    if tally.errors.len() < 5 {
                        tally.errors.push(e.to_string());
                    }
                }
            }
        }
        tally.elapsed = start.elapsed();
        tally
    })
}

fn get_once(target: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {}\r\n\r\n", target.ip()).as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string();
    if !text.starts_with("HTTP/1.1 200") || body.is_empty() {
        return Err(std::io::Error::other(format!("unexpected answer: {:?}", text.lines().next())));
    }
    Ok(body)
}
