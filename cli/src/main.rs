//! `mcp-firewall`: native tools around the filter's own core (never built into the wasm).

mod approvals;
mod audit_cmd;
mod collector;
mod pin_cmd;
mod policy_cmd;
mod policy_test;
mod scan;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mcp-firewall",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (policy version 1; the filter it matches: mcp_firewall.wasm ",
        env!("CARGO_PKG_VERSION"),
        ", built from the same workspace)"
    ),
    about = "Tools for the mcp-firewall Envoy filter"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate policies with the filter's own compiler; every error names its JSON path.
    Check(policy_cmd::CheckArgs),
    /// Show the decision, the rule that fired and why, for a caller and a message.
    Explain(policy_cmd::ExplainArgs),
    /// Run policy test files (`*.tests.json`).
    Test(policy_cmd::TestArgs),
    /// Read a token on stdin and print the `identity.api_keys` entry to paste.
    HashKey(policy_cmd::HashKeyArgs),
    /// Print the `pins` section for a saved tools/list answer (or a live
    /// server's), or `--diff` a policy's pins against a list.
    Pin(pin_cmd::PinArgs),
    /// Print the Envoy HTTP filter config with the policy embedded.
    EnvoyConfig(policy_cmd::EnvoyConfigArgs),
    /// Scan {"id","text"} JSON lines from stdin with the filter's DLP detectors.
    Scan(scan::ScanArgs),
    /// Measure DLP scanning throughput on generated JSON payloads.
    BenchDlp(scan::BenchArgs),
    /// Receive audit events over HTTP and append them durably to an NDJSON file.
    Collector(collector::CollectorArgs),
    /// The approval service: an API for the filter, a page for approvers.
    Approvals {
        #[command(subcommand)]
        cmd: approvals::ApprovalsCmd,
    },
    /// Verify or read a collected audit trail.
    Audit {
        #[command(subcommand)]
        cmd: audit_cmd::AuditCmd,
    },
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`... | head`)
    // panics; restore the default so the CLI ends quietly like other tools.
    // SAFETY: called once at start-up, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match Cli::parse().cmd {
        Cmd::Check(a) => policy_cmd::check(a),
        Cmd::Explain(a) => policy_cmd::explain(a),
        Cmd::Test(a) => policy_cmd::test(a),
        Cmd::HashKey(a) => policy_cmd::hash_key(a),
        Cmd::Pin(a) => pin_cmd::run(a),
        Cmd::EnvoyConfig(a) => policy_cmd::envoy_config(a),
        Cmd::Scan(args) => scan::run(args),
        Cmd::BenchDlp(args) => scan::bench(args),
        Cmd::Collector(args) => collector::run(args),
        Cmd::Approvals { cmd } => approvals::run(cmd),
        Cmd::Audit { cmd } => audit_cmd::run(cmd),
    }
}
