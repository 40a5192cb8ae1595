//! `loadgen`: the load generator and measuring client of `make bench`.
//!
//! `bench/run.sh` starts the servers (opsdeck, nginx with nchan), runs the
//! baselines and calls one subcommand of this binary per measurement; each
//! subcommand prints its results as one JSON object per line on stdout (the
//! script stores them under `bench/results/`) and its progress on stderr.
//!
//! - `emit RATE SECS`: not a measurement but the job the fan-out benchmark
//!   runs: prints `<k> <unix nanos>` lines at a fixed rate (see `emit.rs`).
//! - `ingest`, `queue`, `latency`: the job engine (see `engine.rs`).
//! - `fanout`, `resume`, `idle`: the live streams (see `streams.rs`).
//! - `term`: the browser terminal (see `term.rs`).
//! - `agent-reconnect`, `agent-cancel`: remote agents (see `agent.rs`).
//!
//! Everything runs on one current-thread tokio runtime, so `taskset -c 1`
//! pins the whole client to one core, and the CPU time it reports
//! (getrusage) says whether the client itself was the bottleneck.

mod agent;
mod api;
mod emit;
mod engine;
mod sse;
mod stats;
mod streams;
mod sys;
mod term;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "opsdeck's benchmark client (driven by bench/run.sh)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print `<k> <unix nanos>` lines at RATE lines/s for SECS seconds.
    Emit { rate: u64, secs: u64 },
    /// One job printing many lines: claim-to-finish time and peak RSS.
    Ingest(engine::IngestArgs),
    /// Many tiny jobs through the queue: jobs/s.
    Queue(engine::QueueArgs),
    /// Tiny jobs at a fixed rate: enqueue-to-start latency.
    Latency(engine::LatencyArgs),
    /// One job's lines to many SSE subscribers: the highest rate that holds.
    Fanout(streams::FanoutArgs),
    /// Time to the first event when resuming a long log near its end.
    Resume(streams::ResumeArgs),
    /// Server memory per idle open stream.
    Idle(streams::IdleArgs),
    /// Terminal throughput and keystroke echo (opsdeck, terminado, the PTY).
    Term(term::TermArgs),
    /// An agent cut off and back 100 times: return to the first resent line.
    AgentReconnect(agent::AgentArgs),
    /// Cancel to process gone, on an agent.
    AgentCancel(agent::AgentArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Emit { rate, secs } => emit::run(rate, secs),
        command => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(async move {
                match command {
                    Command::Ingest(a) => engine::ingest(a).await,
                    Command::Queue(a) => engine::queue(a).await,
                    Command::Latency(a) => engine::latency(a).await,
                    Command::Fanout(a) => streams::fanout(a).await,
                    Command::Resume(a) => streams::resume(a).await,
                    Command::Idle(a) => streams::idle(a).await,
                    Command::Term(a) => term::term(a).await,
                    Command::AgentReconnect(a) => agent::reconnect(a).await,
                    Command::AgentCancel(a) => agent::cancel(a).await,
                    Command::Emit { .. } => unreachable!("handled above"),
                }
            }),
            Err(e) => Err(anyhow::anyhow!("cannot start the tokio runtime: {e}")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints one result line (JSON) on stdout.
pub fn print_result(value: &serde_json::Value) {
    println!("{value}");
}
