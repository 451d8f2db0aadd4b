//! Compiles the C layer over oneDNN (`csrc/dnnl_gemm.c`) when the `onednn` feature is on (the
//! default) and the system has oneDNN (Debian: `libdnnl-dev`; elsewhere `DNNL_ROOT`). Without
//! it the node builds anyway, on candle's pure-Rust kernels, and says so in a build warning;
//! `RERANK_REQUIRE_ONEDNN=1` turns that into an error (CI sets it).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/dnnl_gemm.c");
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
    let lib_dir = lib_dirs
        .iter()
        .find(|d| d.join("libdnnl.so").exists())
        .ok_or("libdnnl.so not found")?;
    let mut build = cc::Build::new();
    build
        .file("csrc/dnnl_gemm.c")
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
