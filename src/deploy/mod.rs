//! Deployment runs on rented GPUs: SSH to the instance, the session ledger (every rental
//! recorded before it is asked for), and the janitor that leaves no instance orphaned.

pub mod janitor;
pub mod ledger;
pub mod requirements;
pub mod ssh;
