//! `mcp-firewall`: native tools around the filter's own core (never built into the wasm).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "mcp-firewall", version, about = "Tools for the mcp-firewall Envoy filter")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {}
}
