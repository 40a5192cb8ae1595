//! Link options of the wasm.
//!
//! `-O0` for wasm-ld (rustc passes `-O2`; the last one counts): no merging
//! of identical strings and string tails in the data segment. cargo-leptos'
//! `--split` (wasm_split_cli_support 0.2.3) gives each wasm part the data
//! only its code uses; a merged string that two parts use is copied into
//! each, and when the copies make the segment longer than the linker's,
//! the tool gives up and puts the whole segment into the main wasm: 57 KB
//! more, which the first visit downloads (docs/benchmarks.md, issue 16).
//! Which strings merge shifts with any change of code, so whether the split
//! kept the data apart was luck; unmerged, it always does.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=-O0");
    }
}
