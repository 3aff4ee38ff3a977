// TEMPORARY: runs benches/gpu_tick.rs's main until Cargo.toml has its [[bench]] entry.
include!("../benches/gpu_tick.rs");
#[test]
fn run_bench() {
    main();
}
