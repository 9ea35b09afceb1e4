//! Audit events and the hash chain (owned by the audit work).
