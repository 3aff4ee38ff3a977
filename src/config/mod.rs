//! Configuration: the YAML schema, loading with line/column errors, validation, and paths.

mod schema;

pub use schema::*;
