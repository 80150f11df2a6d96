//! durable: durable workflow execution backed by Postgres.
//!
//! `engine` is plain Rust, covered by `cargo test`; `bindings` (feature
//! `python`, turned on by maturin) exposes it to Python as `durable._core`.

pub mod engine;

#[cfg(feature = "python")]
mod bindings;
