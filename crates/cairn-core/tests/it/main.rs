//! cairn-core's tests, one binary: trace tests of the semantics, validation goldens,
//! seeded property tests of step and replay, and the dependency-purity check.

mod addressed;
mod properties;
mod purity;
mod semantics;
mod support;
mod validation;
