//! Fakes for the demo and tests: `mock-llm` (an OpenAI-compatible server with fault injection).

pub mod mock_llm;
