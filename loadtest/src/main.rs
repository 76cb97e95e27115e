//! `loadtest`: load generator and latency meter for quotecast (and protocol-compatible peers).
//!
//! Layout:
//! * `config`    — CLI, named scenarios, loopback URL validation.
//! * `ws`        — hand-written client WebSocket: upgrade, frame parsing, masked writes.
//! * `scan`      — byte-scanning JSON / minimal MessagePack decoding of server messages.
//! * `client`    — one subscriber task (lean read loop, seq checks, latency recording).
//! * `publisher` — paced batch publisher.
//! * `stats`     — shared counters, per-thread histograms, /proc sampling, RLIMIT_NOFILE.
//! * `run`       — phases of a run, server spawning, smoke assertions.
//! * `report`    — results JSON, stdout table, latency SVG plot.

mod client;
mod config;
mod publisher;
mod pusher_http;
mod report;
mod run;
mod scan;
mod stats;
mod ws;

use anyhow::{Context, Result};
use clap::Parser;
use config::{Cli, Cmd, Scenario};
use std::process::ExitCode;

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Plot { inputs, out } => {
            report::plot_files(&inputs, &out)?;
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run(args) => {
            let nofile = stats::raise_nofile();
            let settings = config::Settings::resolve(&args)?;
            if (nofile as usize) < settings.clients + 64 {
                eprintln!(
                    "loadtest: warning: RLIMIT_NOFILE is {nofile}, below {} clients + slack",
                    settings.clients
                );
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(settings.threads)
                .enable_all()
                .build()
                .context("building tokio runtime")?;
            let smoke = args.scenario == Scenario::Smoke;
            let out = args.out.clone();
            let results = rt.block_on(run::run(*args));
            // Do not wait for straggling client tasks.
            rt.shutdown_timeout(std::time::Duration::from_millis(500));
            let results = match results {
                Ok(r) => r,
                Err(e) if smoke => {
                    println!("smoke: FAILED: {e:#}");
                    println!("smoke: 0 passed, 1 failed");
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e),
            };
            print!("{}", report::table(&results));
            if let Some(out) = out {
                let svg = report::write(&results, &out)?;
                println!("  wrote {} and {}", out.display(), svg.display());
            }
            if smoke {
                if results.failures.is_empty() {
                    println!("smoke: 1 passed, 0 failed");
                } else {
                    for f in &results.failures {
                        println!("smoke: FAILED: {f}");
                    }
                    println!("smoke: 0 passed, 1 failed");
                    return Ok(ExitCode::FAILURE);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
