//! Process-wide shared state between worker VMs (proxy-wasm shared data).
//!
//! Each Envoy worker runs its own VM; shared data is the only memory they
//! share, with compare-and-swap. It survives VM reloads and dies with the
//! process, which is what session bindings and the audit chain need.

use std::collections::HashMap;
use std::sync::Mutex;

/// A failed shared-data call, as the host boundary reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Someone wrote the key after our `get`: re-read and try again.
    CasMismatch,
    /// Any other host status, named for the log.
    Host(String),
}

/// proxy-wasm shared data, seen through the two calls we need.
pub trait SharedStore {
    /// The value and its CAS token; `(None, None)` when the key does not exist.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError>;
    /// Write `value`; with `cas`, only if the key still carries that token (an
    /// absent key is always written, as Envoy does).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// Shared data in memory with Envoy's semantics (tokens from one counter; a
/// token of 0/None or an absent key writes unconditionally). For tests and the CLI.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    next_cas: u32,
    entries: HashMap<String, (Vec<u8>, u32)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Nothing was ever written (a poisoned lock reads as not empty).
    pub fn is_empty(&self) -> bool {
        self.inner.lock().is_ok_and(|i| i.entries.is_empty())
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| StoreError::Host("poisoned lock".into()))?;
        Ok(match inner.entries.get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| StoreError::Host("poisoned lock".into()))?;
        if let (Some((_, current)), Some(expected)) = (inner.entries.get(key), cas) {
            if expected != 0 && expected != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        // Envoy never hands out token 0 (it means "no check"), so skip it on wrap.
        inner.next_cas = inner.next_cas.checked_add(1).unwrap_or(1);
        let token = inner.next_cas;
        inner
            .entries
            .insert(key.to_owned(), (value.to_vec(), token));
        Ok(())
    }
}
