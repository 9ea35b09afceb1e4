//! Tool catalogues as servers list them: pins of tool definitions
//! ([`pins`]). Pure: shared data is reached through [`crate::store::SharedStore`].

pub mod pins;
