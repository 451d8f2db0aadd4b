//! Compiles the C layer over oneDNN (`csrc/dnnl_gemm.c`) when the `onednn` feature is on (the
//! default) and the system has oneDNN (Debian: `libdnnl-dev`; elsewhere `DNNL_ROOT`). Without
//! it the node builds anyway, on candle's pure-Rust kernels, and says so in a build warning;
//! `RERANK_REQUIRE_ONEDNN=1` turns that into an error (CI sets it).
//!
//! The probe reruns when the library appears or disappears: a found library is watched itself;
//! while none is found, the directories it could appear in are (and, on Debian/Ubuntu, dpkg's
//! package database, whose timestamp changes on every install while packaged files keep their
//! build dates).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/dnnl_gemm.c");
    println!("cargo:rerun-if-changed=csrc/amx_attention.c");
    println!("cargo:rerun-if-changed=csrc/avx512_attention.c");
    println!("cargo:rerun-if-changed=csrc/avx2_attention.c");
    println!("cargo:rerun-if-changed=csrc/int8_rows.h");
    println!("cargo:rerun-if-changed=csrc/avx512_exp.h");
    println!("cargo:rerun-if-env-changed=DNNL_ROOT");
    println!("cargo:rerun-if-env-changed=RERANK_REQUIRE_ONEDNN");
    println!("cargo::rustc-check-cfg=cfg(has_onednn)");
    if std::env::var_os("CARGO_FEATURE_ONEDNN").is_none() {
        return;
    }
    let required = std::env::var("RERANK_REQUIRE_ONEDNN").is_ok_and(|v| v == "1");
    match build_shim() {
        Ok(()) => println!("cargo:rustc-cfg=has_onednn"),
        Err(why) if required => panic!("oneDNN required (RERANK_REQUIRE_ONEDNN=1): {why}"),
        Err(why) => println!(
            "cargo:warning=oneDNN not used ({why}); the node runs candle's kernels. \
             Install libdnnl-dev (or set DNNL_ROOT) for the fast CPU path."
        ),
    }
}

/// Debian's package database: rewritten by every `apt-get install` / `remove`.
const DPKG_STATUS: &str = "/var/lib/dpkg/status";

fn build_shim() -> Result<(), String> {
    let root = std::env::var_os("DNNL_ROOT").map(PathBuf::from);
    let lib_dirs: Vec<PathBuf> = match &root {
        Some(r) => vec![r.join("lib"), r.join("lib64")],
        None => [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib",
            "/usr/local/lib",
        ]
        .iter()
        .map(PathBuf::from)
        .collect(),
    };
    let Some(lib_dir) = lib_dirs.iter().find(|d| d.join("libdnnl.so").exists()) else {
        for dir in lib_dirs.iter().filter(|d| d.is_dir()) {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
        if std::path::Path::new(DPKG_STATUS).is_file() {
            println!("cargo:rerun-if-changed={DPKG_STATUS}");
        }
        return Err("libdnnl.so not found".into());
    };
    println!(
        "cargo:rerun-if-changed={}",
        lib_dir.join("libdnnl.so").display()
    );
    let mut build = cc::Build::new();
    build
        .file("csrc/dnnl_gemm.c")
        .file("csrc/amx_attention.c")
        .file("csrc/avx512_attention.c")
        .file("csrc/avx2_attention.c")
        .include("csrc")
        .flag("-fopenmp")
        .flag("-std=c11")
        .opt_level(3)
        .warnings(true)
        .cargo_warnings(false);
    if let Some(r) = &root {
        build.include(r.join("include"));
    }
    build
        .try_compile("rr_dnnl")
        .map_err(|e| format!("csrc/dnnl_gemm.c does not compile against oneDNN: {e}"))?;
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=dnnl");
    println!("cargo:rustc-link-lib=dylib=gomp");
    Ok(())
}
