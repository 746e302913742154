//! Shared helpers for Vigil's whole-system tests.

pub mod netns;
