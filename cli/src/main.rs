//! `mcp-firewall`: native tools around the filter's own core (never built into the wasm).

mod audit_cmd;
mod collector;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

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
    /// Receive audit events over HTTP and append them durably to an NDJSON file.
    Collector(collector::CollectorArgs),
    /// Verify or read a collected audit trail.
    Audit {
        #[command(subcommand)]
        cmd: audit_cmd::AuditCmd,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Collector(args) => collector::run(args),
        Cmd::Audit { cmd } => audit_cmd::run(cmd),
    }
}
