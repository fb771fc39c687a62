//! `cargo xtask lab`: the main job on an embedded default. Network namespaces hold a client,
//! a director and three real servers on one bridge; the real servers run nginx, each answering
//! with its own name; the director runs `lvs-agent run` on a generated keepalived.conf; the
//! client sends a bounded number of HTTP requests to the VIP. Then the split the client saw is
//! printed next to the agent's own counters, and everything is torn down.

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
    let conf = lab.keepalived_conf(&a.algo, 80, "TCP", &a.weights);
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
    let tally = http::get_many(&lab.client.ns, SocketAddr::from((VIP, 80)), a.requests, Duration::from_secs(120))?;

    println!(
        "\nWhat the client saw ({} answered, {} failed, {} ms):",
        tally.answered(),
        tally.failures,
        tally.elapsed.as_millis()
    );
    println!("  {:<8} {:>6} {:>8} {:>8}", "server", "weight", "answers", "share");
    for (rs, w) in lab.real_servers.iter().zip(&a.weights) {
        let n = tally.by_server.get(&rs.name).copied().unwrap_or(0);
        let share = if tally.answered() > 0 { 100.0 * n as f64 / tally.answered() as f64 } else { 0.0 };
        println!("  {:<8} {:>6} {:>8} {:>7.1}%", rs.name, w, n, share);
    }
    for e in &tally.errors {
        println!("  error: {e}");
    }

    let agent_proc = match agent_proc {
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
    anyhow::ensure!(tally.failures == 0, "{} requests failed", tally.failures);
    Ok(())
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
