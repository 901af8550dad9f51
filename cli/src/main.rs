//! The `sharded-router` command-line tool (package `sharded-router-cli`): the
//! in-process demo (the default), the management gateway's server and client verbs,
//! and `bench`, a short run of the workloads in `sharded-router-workloads`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_cases;
mod bench_latency;
mod cluster_bench;
mod cluster_serve;
mod demo;
mod demo_actors;
mod gateway_cli;
mod greeter;
mod observe;
mod plot;
mod reload_demo;
mod stats;

#[derive(Parser)]
#[command(version, about = "Sharded, high-throughput message routing for actor runtimes")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run an in-process demo: register actors, route messages and requests, and
    /// report what happened and how fast (the default).
    Demo(demo::DemoArgs),
    /// Benchmark our router against the hand-rolled DashMap of tokio senders, the
    /// single-task anchor and the raw flume and tokio hops (one-way sends,
    /// request/response, channels, scale, churn, overflow, back-pressure, Theater's
    /// shapes) and print a table of rates and ratios; `--latency` for latency
    /// percentiles, `--plot FILE.svg` for a chart.
    Bench(bench::BenchArgs),
    #[command(flatten)]
    Gateway(gateway_cli::GatewayCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => demo::run(&demo::DemoArgs::default()),
        Some(Command::Demo(args)) => demo::run(&args),
        Some(Command::Bench(args)) => bench::run(&args),
        Some(Command::Gateway(command)) => gateway_cli::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
