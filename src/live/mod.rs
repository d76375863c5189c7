//! Children as the cluster has them: the slim form the caches keep (identity,
//! the digest of what this operator applied, a few status facts) and the one
//! digest that tells whether a child needs writing. Shared by the controller
//! and metering; knows nothing of either.

pub mod digest;
pub mod slim;

pub use slim::{Facts, Metered, Slim, Slimmable, slim};
