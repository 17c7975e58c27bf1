//! `provision`: a declarative node-provisioning agent.
//!
//! Data flows one way: [`manifest`] (parse, validate, select this node) → [`engine`] (desired
//! resources, ordered graph, observe → diff → apply, report) → [`cli`] (human or JSON output,
//! exit codes). Everything that touches the machine goes through [`host::Host`], which resolves
//! every managed path under `--root` and writes files atomically.

pub mod bundle;
pub mod cli;
pub mod daemon;
pub mod engine;
pub mod facts;
pub mod fuzzing;
pub mod gpu;
pub mod host;
pub mod http;
pub mod manifest;
pub mod resources;
pub mod secret;
pub mod supervisor;
pub mod template;
