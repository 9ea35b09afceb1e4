//! Process-wide shared state between worker VMs (proxy-wasm shared data).
//!
//! Each Envoy worker runs its own VM; shared data is the only memory they
//! share, with compare-and-swap. It survives VM reloads and dies with the
//! process, which is what session bindings and the audit chain need.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Someone else wrote the key since we read it: re-read and retry.
    CasMismatch,
    /// The host refused the operation.
    Unavailable,
}

pub trait SharedStore {
    /// The value and its CAS token (`None` when the key was never written).
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError>;
    /// Write `value`; with `cas`, only if the key is unchanged since that read.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// An in-memory store with the host's CAS semantics, for tests and the CLI.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: std::sync::Mutex<std::collections::HashMap<String, (Vec<u8>, u32)>>,
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        let map = self.entries.lock().map_err(|_| StoreError::Unavailable)?;
        Ok(match map.get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut map = self.entries.lock().map_err(|_| StoreError::Unavailable)?;
        let current = map.get(key).map(|(_, c)| *c);
        // Like Envoy: a CAS of 0/None writes unconditionally; otherwise it must match.
        if let Some(want) = cas.filter(|c| *c != 0) {
            if current != Some(want) {
                return Err(StoreError::CasMismatch);
            }
        }
        let next = current.map_or(1, |c| c.wrapping_add(1).max(1));
        map.insert(key.to_owned(), (value.to_vec(), next));
        Ok(())
    }
}
