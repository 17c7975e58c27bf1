//! Signed bundles: a manifest and the files it reads, made by `provision bundle`, served by any
//! static file server over HTTPS, pulled by `provision agent URL` and `provision apply URL`.
//!
//! [`format`] is the file and its ed25519 signature, [`make`] gathers what a manifest reads,
//! [`fetch`] is the bounded HTTPS GET with ETag, [`cache`] the last good bundle under the root.

pub mod cache;
pub mod fetch;
pub mod format;
pub mod make;

pub use fetch::{Fetched, Source, Validators};
pub use format::{Bundle, BundleError, PublicKey, SecretKey};
