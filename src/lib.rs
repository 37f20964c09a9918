//! The overload lab's shared code: the simulated backend and load generator
//! used by `examples/overload.rs` and by the scenario tests in `tests/`.
//!
//! Unpublished; it exists so the example and the tests run the same
//! simulation.

pub mod alloc;
pub mod scenarios;
pub mod sim;
pub mod stacks;

// The README's example is compiled and run as a doc test, so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
