//! DLP detectors (owned by the DLP work).
