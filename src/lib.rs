//! mcp-firewall: an MCP firewall as a proxy-wasm HTTP filter for Envoy.
//!
//! Everything except `glue` is a pure core that compiles and is tested natively;
//! `glue` adapts it to the proxy-wasm host and only exists on wasm32.

/// Only where the module is the filter (and in its own tests): the type is
/// sound on one thread only.
#[cfg(any(test, all(target_arch = "wasm32", not(target_feature = "atomics"))))]
mod alloc;
pub mod approval;
pub mod audit;
pub mod canon;
pub mod catalogue;
pub mod condition;
pub mod config;
pub mod decide;
pub mod descriptors;
pub mod dlp;
/// The in-memory exchange driver of tests, fuzzing and profiling.
#[cfg(any(test, feature = "fake-host"))]
pub mod exchange;
pub mod filter;
pub mod glob;
pub mod host;
pub mod identity;
pub mod in_force;
pub mod json;
pub mod jsonrpc;
pub mod media_type;
/// The module's own `memcmp` (wasi-libc's reads a byte a step).
#[cfg(target_arch = "wasm32")]
mod memcmp;
pub mod meter;
pub mod policy;
pub mod reply;
pub mod response;
pub mod response_head;
pub mod rule_id;
pub mod session;
mod sort;
pub mod sse;
pub mod store;
pub mod text_hash;
pub mod time_window;
pub mod verdict;

#[cfg(target_arch = "wasm32")]
mod glue;

/// Small blocks from per-class free lists (`alloc`); only where a VM is one
/// thread (proxy-wasm's wasm32 without atomics).
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
// SAFETY: a VM is one thread (the cfg above: no atomics, so no threads).
static ALLOCATOR: alloc::SizeClasses<std::alloc::System> =
    unsafe { alloc::SizeClasses::new(std::alloc::System) };
