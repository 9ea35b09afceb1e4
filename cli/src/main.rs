//! `mcp-firewall`: native tools around the filter's own core (never built into the wasm).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod scan;

#[derive(Parser)]
#[command(
    name = "mcp-firewall",
    version,
    about = "Tools for the mcp-firewall Envoy filter"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Scan {"id","text"} JSON lines from stdin with the filter's DLP detectors.
    Scan(scan::ScanArgs),
    /// Measure DLP scanning throughput on generated JSON payloads.
    BenchDlp(scan::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Scan(args) => scan::run(args),
        Cmd::BenchDlp(args) => scan::bench(args),
    }
}
