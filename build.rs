//! Compiles the fake libnvidia-ml used by the GPU tests and benchmark (tests/fake_nvml) into
//! OUT_DIR, and tells the tests where it is through `LLMDECK_FAKE_NVML` (all readings) and
//! `LLMDECK_FAKE_NVML_MINIMAL` (optional symbols left out). llmdeck itself never links it.
//! Without a C compiler the build still succeeds: the variables are empty and the GPU tests say
//! why they cannot run.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "tests/fake_nvml/fake_nvml.c";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        println!("cargo:warning=OUT_DIR is not set; the fake NVML library is not built");
        return;
    };
    let full = build_fake(&out_dir.join("fake_nvml"), &[]);
    let minimal = build_fake(&out_dir.join("fake_nvml_minimal"), &["-DFAKE_NVML_MINIMAL"]);
    println!("cargo:rustc-env=LLMDECK_FAKE_NVML={}", full.unwrap_or_default());
    println!("cargo:rustc-env=LLMDECK_FAKE_NVML_MINIMAL={}", minimal.unwrap_or_default());
}

/// Builds `dir/libnvidia-ml.so.1`; its path, or `None` (with a cargo warning) on failure.
fn build_fake(dir: &Path, defines: &[&str]) -> Option<String> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        println!("cargo:warning=cannot create {}: {e}", dir.display());
        return None;
    }
    let output = dir.join("libnvidia-ml.so.1");
    // cc's detection honours CC, CFLAGS and the target, like any other C build in cargo.
    let compiler = match cc::Build::new().cargo_metadata(false).opt_level(2).pic(true).warnings(true).try_get_compiler()
    {
        Ok(c) => c,
        Err(e) => {
            println!("cargo:warning=no C compiler for the fake NVML library: {e}");
            return None;
        }
    };
    let mut cmd: Command = compiler.to_command();
    cmd.args(defines).arg("-shared").arg("-fvisibility=hidden").arg("-o").arg(&output).arg(SOURCE).arg("-ldl");
    match cmd.output() {
        Ok(out) if out.status.success() => Some(output.display().to_string()),
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.stderr).lines() {
                println!("cargo:warning={line}");
            }
            println!("cargo:warning=compiling the fake NVML library failed");
            None
        }
        Err(e) => {
            println!("cargo:warning=cannot run the C compiler: {e}");
            None
        }
    }
}
