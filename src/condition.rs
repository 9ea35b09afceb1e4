//! `when` conditions (owned by the conditions work).
