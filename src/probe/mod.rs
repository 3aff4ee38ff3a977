//! The probe: smoke tests and benchmarks of OpenAI-compatible endpoints.

pub mod cli;
