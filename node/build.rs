//! Compiles the C layer over oneDNN when the `onednn` feature is on.

fn main() {
    println!("cargo:rerun-if-changed=csrc/dnnl_gemm.c");
    if std::env::var_os("CARGO_FEATURE_ONEDNN").is_none() {
        return;
    }
    cc::Build::new()
        .file("csrc/dnnl_gemm.c")
        .flag("-fopenmp")
        .flag("-std=c11")
        .opt_level(3)
        .warnings(true)
        .compile("rr_dnnl");
    println!("cargo:rustc-link-lib=dylib=dnnl");
    println!("cargo:rustc-link-lib=dylib=gomp");
}
