// Runs examples/profile_exchange built for wasm32-wasip1 under Node's WASI, so
// the filter's core is timed (and, with --cpu-prof, profiled per function) as
// the Wasm code V8 compiles, the engine Envoy runs. Not a test or a benchmark
// with a verdict: it prints what the example prints. From the repository root:
//
//   cargo build --release --features fake-host --example profile_exchange --target wasm32-wasip1
//   node --no-liftoff --experimental-wasm-relaxed-simd scripts/profile-wasm.mjs \
//     target/wasm32-wasip1/release/examples/profile_exchange.wasm 100000 4k [audit] [metered]
//
// It runs any wasm32-wasip1 command the same way, and exits with its exit
// code: scripts/test.sh runs it (through scripts/wasm-test-runner.sh) as
// cargo's runner for the library's unit tests built for wasm32-wasip1, so they
// run with the module's own allocator (src/alloc.rs) and 32-bit sizes, as in
// Envoy.
//
// --no-liftoff: proxy-wasm's V8 compiles with TurboFan only.
// --experimental-wasm-relaxed-simd: the DLP prefilter uses a relaxed SIMD
// instruction (src/dlp/prefilter.rs), which Envoy's V8 runs by default but
// Node 20's (V8 11.3) only behind this flag. Add
// --cpu-prof --cpu-prof-dir=DIR for a profile (build with
// CARGO_PROFILE_RELEASE_STRIP=none so functions keep their names).
import { WASI } from 'node:wasi';
import { readFileSync, writeFileSync } from 'node:fs';

const [file, ...args] = process.argv.slice(2);
if (!file) {
  console.error('usage: node --no-liftoff --experimental-wasm-relaxed-simd scripts/profile-wasm.mjs PROFILE_EXCHANGE.wasm [N] [4k] [audit] [metered] [list] [cold=KB]');
  process.exit(2);
}
const wasi = new WASI({
  version: 'preview1',
  args: ['profile_exchange', ...args],
  env: process.env,
  preopens: { '.': process.cwd() },
});
const module = await WebAssembly.compile(readFileSync(file));
// The library links the proxy-wasm imports, but the example runs on the fake
// host and never calls them: each one traps if it ever does.
const env = {};
for (const i of WebAssembly.Module.imports(module)) {
  if (i.module === 'env') {
    env[i.name] = () => {
      throw new Error(`proxy-wasm host call ${i.name} in the fake-host example`);
    };
  }
}
// The exit code is recorded the moment the program states it (scripts/
// wasm-test-runner.sh reads it): `proc_exit` for a non-zero code, the return
// of `_start` for zero.
const recordExit = (code) => {
  if (process.env.MCP_FIREWALL_WASM_EXIT_FILE) {
    writeFileSync(process.env.MCP_FIREWALL_WASM_EXIT_FILE, String(code));
  }
};
const wasiImports = wasi.getImportObject();
const preview1 = wasiImports.wasi_snapshot_preview1;
const procExit = preview1.proc_exit;
const imports = {
  ...wasiImports,
  wasi_snapshot_preview1: {
    ...preview1,
    proc_exit: (code) => {
      recordExit(code);
      return procExit(code);
    },
  },
  env,
};
const instance = await WebAssembly.instantiate(module, imports);
// The cdylib's reactor export makes Node refuse start(): run it as a command.
const exports = { ...instance.exports };
delete exports._initialize;
// Node's WASI returns the command's exit code (returnOnExit): a failed test
// run exits 101, which must reach cargo.
const code = wasi.start({ exports }) ?? 0;
recordExit(code);
process.exit(code);
