//! qgate's network side.

#![warn(missing_docs)]

mod options;

pub use crate::options::{PasswordFile, ServerLimits, ServerOptions};
