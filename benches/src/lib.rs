//! Shared pieces of cpt's criterion benchmarks: the quickstart model and paths to bundled data.

use cpt_models::LlamaConfig;
use std::path::PathBuf;

/// The repository root (benches run with the crate directory as working directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ lives in the repo")
        .to_path_buf()
}

/// The model of `examples/quickstart.toml`, read from the file so the bench tracks it.
pub fn quickstart_model() -> LlamaConfig {
    let text = std::fs::read_to_string(repo_root().join("examples/quickstart.toml"))
        .expect("quickstart config");
    let config: cpt_core::RunConfig =
        cpt_core::RunConfig::parse(&text, std::path::Path::new("quickstart.toml"), &[])
            .expect("valid quickstart");
    toml::Value::Table(
        config
            .model
            .config
            .expect("the quickstart builds a fresh model"),
    )
    .try_into()
    .expect("a llama config")
}

/// Sequence length and batch size of the quickstart.
pub fn quickstart_shape() -> (usize, usize) {
    let text = std::fs::read_to_string(repo_root().join("examples/quickstart.toml"))
        .expect("quickstart config");
    let config = cpt_core::RunConfig::parse(&text, std::path::Path::new("quickstart.toml"), &[])
        .expect("valid quickstart");
    (config.data.seq_len, config.train.batch_size)
}

/// The allocator of the `cpt` binary, so benchmarks measure what users run (see
/// `cpt-cli/src/main.rs` for why mimalloc and why freed pages are kept).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keep freed pages mapped, as `cpt` does (mimalloc 3's `mi_option_purge_delay` is 15).
pub fn keep_freed_pages() {
    // SAFETY: setting an option is thread-safe in mimalloc and takes plain integers.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
}
