//! The workstation side of the toolkit: everything behind the `fer` command.
//!
//! * [`keys`]: ed25519 signing keys (`fer keygen`).
//! * [`config`]: device configs, TOML <-> flash encoding (`fer config`).
//! * [`bundler`]: signed bundles from an exported model, a detector and a config (`fer bundle`).
//! * [`board`]: boards reached as a local folder or over OpenSSH (`fer flash`, `fer rollback`,
//!   `fer status`); the board side is `fer-edge bundle ...` ([`edge::bundle`]).
//! * [`collect`]: field-log segments off a board into a dataset folder, never losing or
//!   doubling a record (`fer collect`).
//! * [`dataset`]: dataset folders (`fer dataset`).
//! * [`fleet`]: many boards from a `fleet.toml`, in parallel (`fer fleet`).
//! * [`retrain`]: collect -> retrain -> gate on validation -> bundle -> flash, with a history
//!   of rounds (`fer loop`).
//! * [`demo`]: the whole loop on synthetic faces on this machine (`fer demo`).

pub mod board;
pub mod bundler;
pub mod collect;
pub mod config;
pub mod dataset;
pub mod demo;
pub mod error;
pub mod fleet;
pub mod keys;
pub mod retrain;

pub use error::{Error, Result};
