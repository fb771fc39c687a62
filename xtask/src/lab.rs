//! `cargo xtask lab`: the main job on an embedded default. Network namespaces hold a client,
//! a director and three real servers on one bridge; the real servers run nginx, each answering
//! with its own name; the director runs `lvs-agent run` on a generated keepalived.conf; the
//! client sends a bounded number of HTTP requests to the VIP. Then the split the client saw is
//! printed next to the agent's own counters, and everything is torn down.
//!
//! `--failover`: two directors running VRRP between them (lvs-agent on both), mh, long-lived
//! connections through the master; the master dies mid-traffic and the backup takes over: the
//! take-over time and what every connection saw are printed.

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
    /// Two directors with VRRP; the master dies under traffic (see the module doc).
    #[arg(long, conflicts_with = "keep")]
    failover: bool,
    /// VRRP advert_int for --failover (VRRPv3: 0.01-40.95 s).
    #[arg(long, default_value = "0.1")]
    advert_int: String,
    /// Connections held through the failover (one client address each, at most 50).
    #[arg(long, default_value_t = 20)]
    connections: u8,
}

const TAG: &str = "lab";

pub fn run(a: &Args) -> Result<()> {
    if a.down {
        teardown();
        eprintln!("lab: removed namespaces lvs-{TAG}-* and their processes");
        return Ok(());
    }
    let built = build_agent(true)?;
    if a.failover {
        return failover(a, &built.agent, &built.floor_object);
    }
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

/// `--failover`.
fn failover(a: &Args, agent: &std::path::Path, floor: &std::path::Path) -> Result<()> {
    use lvs_tests::http::Held;
    const FO: &str = "labfo";
    eprintln!("lab: building namespaces lvs-{FO}-* (client, two directors, three real servers, one bridge)");
    let mut lab = DrLab::build_with(FO, 3, 2, floor)?;
    lab.prepare_real_servers(agent)?;
    lab.start_http()?;
    let sources = lab.add_client_addresses(a.connections)?;
    let vrrp = |priority: u8| {
        format!(
            "vrrp_instance VI_1 {{\n    version 3\n    interface eth0\n    virtual_router_id 77\n    priority {priority}\n    advert_int {}\n    virtual_ipaddress {{\n        {VIP}\n    }}\n}}\n",
            a.advert_int
        )
    };
    let conf = lab.keepalived_conf("mh", 80, "TCP", &[1, 1, 1]);
    eprintln!("lab: keepalived.conf of director 1 (director 2: priority 100):\n{conf}{}", vrrp(150));
    let wait = Duration::from_secs(30);
    let mut agent1 = lab.start_agent_on(0, agent, &format!("{conf}{}", vrrp(150)), &[])?;
    agent1.wait_for_line("VRRP BACKUP -> MASTER", wait)?;
    let mut agent2 = lab.start_agent_on(1, agent, &format!("{conf}{}", vrrp(100)), &[])?;
    agent2.wait_for_line("VRRP INIT -> BACKUP", wait)?;

    let target = std::net::SocketAddrV4::new(VIP, 80);
    let mut held: Vec<Held> =
        sources.iter().map(|&s| Held::open_from(&lab.client.ns, s, target)).collect::<Result<_>>()?;
    let first: Vec<String> = held.iter_mut().map(Held::ask).collect::<Result<_>>()?;
    eprintln!("lab: {} connections open through director 1; requests on each, then director 1 dies", held.len());
    let ask_all = |held: &mut Vec<Held>| -> Vec<Result<String, String>> {
        held.iter_mut().map(|h| h.ask().map_err(|e| format!("{e:#}"))).collect()
    };
    let mut rounds_before = 0;
    for _ in 0..10 {
        rounds_before += 1;
        anyhow::ensure!(ask_all(&mut held).iter().all(Result::is_ok), "requests failed before the failover");
    }
    // SAFETY: our child.
    unsafe { libc::kill(agent1.pid() as i32, libc::SIGKILL) };
    drop(agent1);
    lab.director_at(0).ns.ip(&["link", "set", "eth0", "down"])?;
    let died = std::time::Instant::now();
    // Requests go on while the backup takes over (each waits for TCP to retransmit).
    let during = ask_all(&mut held);
    agent2.wait_for_line("VRRP BACKUP -> MASTER", wait)?;
    let took_over = died.elapsed();
    let after = ask_all(&mut held);

    println!(
        "\nDirector 1 (master) killed, its link down; director 2 became master {} ms later.",
        took_over.as_millis()
    );
    println!("(Master_Down_Interval = 3 x advert_int + Skew_Time; requests wait on TCP retransmission meanwhile.)");
    println!("  {:<22} {:<8} {:<8} {:<8}", "client", "before", "during", "after");
    let mut kept = 0;
    for (n, h) in held.iter().enumerate() {
        let show = |r: &Result<String, String>| r.clone().unwrap_or_else(|e| format!("error: {e}"));
        if after[n].as_ref().ok() == Some(&first[n]) && during[n].as_ref().ok() == Some(&first[n]) {
            kept += 1;
        }
        println!("  {:<22} {:<8} {:<8} {:<8}", h.local.to_string(), first[n], show(&during[n]), show(&after[n]));
    }
    println!(
        "\n{kept} of {} connections kept their real server through the failover ({rounds_before} rounds before).",
        held.len()
    );
    drop(held);
    let (status, table) = agent2.stop(libc::SIGTERM, Duration::from_secs(10))?;
    println!("\nDirector 2's table after the take-over (every connection is a flow it took over):\n{table}");
    drop(lab);
    eprintln!("lab: torn down");
    anyhow::ensure!(status.success(), "agent 2 exited with {status}");
    anyhow::ensure!(kept == sources.len(), "{} connections lost", sources.len() - kept);
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
