//! `cargo xtask test`: every tier. Host unit tests run in parallel; the BPF_PROG_TEST_RUN and
//! namespace tests (crate `lvs-tests`) run one at a time, as they share kernel state.

use std::{path::PathBuf, process::Command};

use anyhow::{Result, bail};

use crate::setup::{path_with_tools, workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// Passed to the test binaries (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    rest: Vec<String>,
}

pub fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root()).env("PATH", path_with_tools()).args(args);
    c
}

fn status(mut c: Command) -> Result<()> {
    eprintln!("xtask: {c:?}");
    if !c.status()?.success() {
        bail!("{c:?} failed");
    }
    Ok(())
}

/// What building the agent produced.
pub struct Built {
    pub agent: PathBuf,
    /// lvs-ebpf's floor/pass object, as built by lvs-agent's build script.
    pub floor_object: PathBuf,
}

/// Builds the agent binary; finds the BPF objects through cargo's build-script messages.
pub fn build_agent(release: bool) -> Result<Built> {
    let mut args = vec!["build", "-p", "lvs-agent", "--bin", "lvs-agent", "--message-format=json-render-diagnostics"];
    if release {
        args.push("--release");
    }
    let mut c = cargo(&args);
    c.stdout(std::process::Stdio::piped());
    eprintln!("xtask: {c:?}");
    let out = c.output()?;
    if !out.status.success() {
        bail!("building lvs-agent failed");
    }
    let mut built = Built { agent: PathBuf::new(), floor_object: PathBuf::new() };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let is_agent = msg["package_id"].as_str().is_some_and(|id| id.contains("/lvs-agent#"));
        match msg["reason"].as_str() {
            Some("build-script-executed") if is_agent => {
                built.floor_object = PathBuf::from(msg["out_dir"].as_str().unwrap_or_default()).join("lvs-floor");
            }
            Some("compiler-artifact") if is_agent && msg["target"]["name"] == "lvs-agent" => {
                if let Some(exe) = msg["executable"].as_str() {
                    built.agent = PathBuf::from(exe);
                }
            }
            _ => {}
        }
    }
    if !built.agent.is_file() || !built.floor_object.is_file() {
        bail!("cargo did not report the lvs-agent binary and its BPF objects");
    }
    Ok(built)
}

/// Totals over every test binary, from cargo's "test result:" lines and the loud skip notices.
#[derive(Default)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

/// Runs a `cargo test` command, echoing its output, and adds up what it reports.
fn tests(mut c: Command, counts: &mut Counts) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    eprintln!("xtask: {c:?}");
    let mut child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn()?;
    let stderr = child.stderr.take().expect("piped");
    let skips = std::thread::spawn(move || {
        let mut skipped = 0;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains("*** SKIPPED") {
                skipped += 1;
            }
        }
        skipped
    });
    for line in BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok) {
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| {
                        part.trim().strip_suffix(word).and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    })
                    .unwrap_or(0)
            };
            counts.passed += num(" passed");
            counts.failed += num(" failed");
        }
    }
    let status = child.wait()?;
    let skipped = skips.join().unwrap_or(0);
    // A skipped privileged test returns early and so is reported by cargo as passed.
    counts.passed = counts.passed.saturating_sub(skipped);
    counts.skipped += skipped;
    if !status.success() {
        println!("tests: {} passed, {} failed, {} skipped", counts.passed, counts.failed.max(1), counts.skipped);
        bail!("{c:?} failed");
    }
    Ok(())
}

pub fn run(a: &Args) -> Result<()> {
    status(cargo(&["fmt", "--all", "--check"]))?;
    status(cargo(&[
        "clippy",
        "--quiet",
        "--workspace",
        "--exclude",
        "lvs-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let built = build_agent(false)?;
    let rest: Vec<&str> = a.rest.iter().map(String::as_str).collect();

    let mut counts = Counts::default();
    let mut host = cargo(&["test", "--workspace", "--exclude", "lvs-ebpf", "--exclude", "lvs-tests", "--"]);
    host.args(&rest);
    tests(host, &mut counts)?;

    let mut privileged = cargo(&["test", "-p", "lvs-tests", "--", "--test-threads=1"]);
    privileged.args(&rest).env("LVS_AGENT_BIN", &built.agent);
    tests(privileged, &mut counts)?;

    // The config parser must not panic on any input: libFuzzer for a bounded time.
    let mut fuzz = Command::new("cargo");
    fuzz.current_dir(workspace_root().join("fuzz")).env("PATH", path_with_tools()).args([
        "+nightly",
        "fuzz",
        "run",
        "config_parser",
        "--",
        "-max_total_time=30",
        "-rss_limit_mb=2048",
    ]);
    status(fuzz)?;

    println!("tests: {} passed, {} failed, {} skipped", counts.passed, counts.failed, counts.skipped);
    Ok(())
}
