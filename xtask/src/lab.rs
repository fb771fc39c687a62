//! `cargo xtask lab`: the main job on an embedded default. Network namespaces hold a client,
//! a director and three real servers on one bridge; the real servers run nginx, each answering
//! with its own name; the director runs `lvs-agent run` on a generated keepalived.conf; the
//! client sends a bounded number of HTTP requests to the VIP. Then the split the client saw is
//! printed next to the agent's own counters, and everything is torn down.
//!
//! The real servers carry the seeds' health checks, TCP_CHECK and HTTP_GET (with a short
//! delay_loop so the lab runs in seconds). Mid-run the lab stops the first real server's nginx:
//! the agent takes it out, the client's next requests go to the others, and when nginx is
//! back the server takes traffic again. Each phase's split is printed.

use std::{net::SocketAddr, time::Duration};

use anyhow::Result;
use lvs_tests::{
    http,
    netns::remove_stale,
    topology::{DrLab, VIP},
};

use crate::test::build_agent;

#[derive(clap::Args)]
pub struct Args {
    /// Requests the client sends (each on a new connection).
    #[arg(long, default_value_t = 600)]
    requests: u64,
    /// Scheduler (lb_algo).
    #[arg(long, default_value = "wrr")]
    algo: String,
    /// Real server weights.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    weights: Vec<u32>,
    /// Leave the lab running afterwards and print how to use it.
    #[arg(long)]
    keep: bool,
    /// Tear down a lab left by --keep, and stop.
    #[arg(long)]
    down: bool,
}

const TAG: &str = "lab";

pub fn run(a: &Args) -> Result<()> {
    if a.down {
        teardown();
        eprintln!("lab: removed namespaces lvs-{TAG}-* and their processes");
        return Ok(());
    }
    let built = build_agent(true)?;
    let agent = built.agent;
    eprintln!("lab: building namespaces lvs-{TAG}-* (client, director, {} real servers, one bridge)", a.weights.len());
    let mut lab = DrLab::build(TAG, a.weights.len(), &built.floor_object)?;
    lab.prepare_real_servers(&agent)?;
    lab.start_http()?;
    let conf = checked_conf(&lab, &a.algo, &a.weights);
    eprintln!("lab: keepalived.conf for the director:\n{conf}");
    // With --keep the agent outlives us: its output goes to a log file instead of our pipe.
    let log = lab.dir.join("lvs-agent.log");
    let agent_proc = if a.keep {
        let pid = lab.start_agent_detached(&agent, &conf, &log)?;
        Err(pid)
    } else {
        Ok(lab.start_agent(&agent, &conf, &[])?)
    };

    eprintln!("lab: {} HTTP requests from the client to http://{VIP}/ ...", a.requests);
    let tally = phase(&lab, a, "What the client saw")?;
    let mut failures = tally.failures;

    let mut agent_proc = match agent_proc {
        Ok(proc) => proc,
        Err(pid) => {
            println!("\nThe lab keeps running (agent pid {pid}, its output in {}). Try:", log.display());
            println!("  ip netns exec lvs-{TAG}-client curl -s http://{VIP}/");
            println!("  kill -USR1 {pid}    # services, counters, rates (ipvsadm -Ln, --stats, --rate) into the log");
            println!("  kill -USR2 {pid}    # the connection table (ipvsadm -Lnc) into the log");
            println!("  tail -f {}", log.display());
            println!("  ip netns exec lvs-{TAG}-director bpftool net show dev eth0");
            println!("  cargo xtask lab --down   # tear it all down");
            // Everything stays: the namespaces, nginx, the agent, the work directory.
            std::mem::forget(lab);
            return Ok(());
        }
    };

    // Health checks at work: the first real server's nginx stops, then comes back.
    let victim = lab.real_servers[0].ip;
    eprintln!("lab: stopping nginx on {} ({victim}) ...", lab.real_servers[0].name);
    let stopped = std::time::Instant::now();
    lab.stop_http_on(0)?;
    let limit = Duration::from_secs(10);
    agent_proc.wait_for_line(&format!("{victim}:80 is down"), limit)?;
    println!(
        "\nThe agent took {} out {} ms after its nginx stopped (config: delay_loop {DELAY_LOOP} s, retry {RETRY}, \
         delay_before_retry {DELAY_BEFORE_RETRY} s: at most {} s).",
        lab.real_servers[0].name,
        stopped.elapsed().as_millis(),
        DELAY_LOOP + RETRY * DELAY_BEFORE_RETRY
    );
    failures += phase(&lab, a, &format!("With {}'s nginx stopped", lab.real_servers[0].name))?.failures;
    lab.start_http_on(0)?;
    let back = std::time::Instant::now();
    agent_proc.wait_for_line(&format!("{victim}:80 is up"), limit)?;
    println!(
        "\nnginx on {} is back; the agent restored it {} ms later (at most delay_loop, {DELAY_LOOP} s).",
        lab.real_servers[0].name,
        back.elapsed().as_millis()
    );
    failures += phase(&lab, a, &format!("With {}'s nginx back", lab.real_servers[0].name))?.failures;

    let (status, stats) = agent_proc.stop(libc::SIGTERM, Duration::from_secs(10))?;
    println!(
        "\nWhat the director's XDP program counted (lvs-agent, in the layouts of ipvsadm -Ln, -Ln --stats and -Ln --rate):"
    );
    println!("{stats}");
    println!("(OutPkts/OutBytes are 0: with direct routing the real servers answer the client themselves.");
    println!(" Rates come from IPVS's estimator, sampled every 2 s: a run shorter than that shows none.)");
    drop(lab);
    eprintln!("lab: torn down (agent exited with {status})");
    anyhow::ensure!(status.success(), "the agent exited with {status}");
    anyhow::ensure!(failures == 0, "{failures} requests failed");
    Ok(())
}

/// The health checks' timing in the lab (seconds): short, so a failure shows in seconds.
const DELAY_LOOP: u64 = 1;
const RETRY: u64 = 1;
const DELAY_BEFORE_RETRY: u64 = 1;

/// The lab's keepalived.conf: one DR service on the VIP, each real server with the seeds'
/// TCP_CHECK and HTTP_GET (status_code 200 on nginx's /health/ok).
fn checked_conf(lab: &DrLab, algo: &str, weights: &[u32]) -> String {
    let mut c = format!(
        "! lvs-xdp lab\nvirtual_server {VIP} 80 {{\n    delay_loop {DELAY_LOOP}\n    lb_algo {algo}\n    lb_kind DR\n    protocol TCP\n"
    );
    let timing = format!(
        "            connect_timeout 1\n            retry {RETRY}\n            delay_before_retry {DELAY_BEFORE_RETRY}\n"
    );
    for (rs, w) in lab.real_servers.iter().zip(weights) {
        c.push_str(&format!(
            "    real_server {} 80 {{\n        weight {w}\n        TCP_CHECK {{\n            connect_port 80\n{timing}        }}\n\
             \x20       HTTP_GET {{\n            url {{\n                path /health/ok\n                status_code 200\n            }}\n{timing}        }}\n    }}\n",
            rs.ip
        ));
    }
    c.push_str("}\n");
    c
}

/// Sends the requests and prints the split the client saw under `title`.
fn phase(lab: &DrLab, a: &Args, title: &str) -> Result<http::Tally> {
    let tally = http::get_many(&lab.client.ns, SocketAddr::from((VIP, 80)), a.requests, Duration::from_secs(120))?;
    println!("\n{title} ({} answered, {} failed, {} ms):", tally.answered(), tally.failures, tally.elapsed.as_millis());
    println!("  {:<8} {:>6} {:>8} {:>8}", "server", "weight", "answers", "share");
    for (rs, w) in lab.real_servers.iter().zip(&a.weights) {
        let n = tally.by_server.get(&rs.name).copied().unwrap_or(0);
        let share = if tally.answered() > 0 { 100.0 * n as f64 / tally.answered() as f64 } else { 0.0 };
        println!("  {:<8} {:>6} {:>8} {:>7.1}%", rs.name, w, n, share);
    }
    for e in &tally.errors {
        println!("  error: {e}");
    }
    Ok(tally)
}

fn teardown() {
    let prefix = format!("lvs-{TAG}-");
    if let Ok(out) = std::process::Command::new("ip").args(["netns", "list"]).output() {
        for ns in String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()) {
            if ns.starts_with(&prefix)
                && let Ok(p) = std::process::Command::new("ip").args(["netns", "pids", ns]).output()
            {
                for pid in String::from_utf8_lossy(&p.stdout).split_whitespace() {
                    let _ = std::process::Command::new("kill").arg(pid).status();
                }
            }
        }
    }
    remove_stale(&prefix);
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("lvs-{TAG}")));
}
