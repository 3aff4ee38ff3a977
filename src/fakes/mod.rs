//! Fakes for the demo and tests: `mock-llm` (an OpenAI-compatible server with fault injection)
//! and `mock-shopper` (the GPU shopper service, with an SSH server for its instances).

pub mod mock_llm;
pub mod mock_shopper;
