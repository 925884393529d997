//! Helpers every end-to-end test of the `cpt` binary uses: paths of the bundled data, running the
//! binary, reading what it printed.

// Each test file is its own crate and uses some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A file of the bundled data (`examples/data/<rel>`), as a config string.
pub fn data(rel: &str) -> String {
    repo().join("examples/data").join(rel).display().to_string()
}

/// Run `cpt` with `args`, logging warnings only.
pub fn cpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cpt"))
        .args(args)
        .env("CPT_LOG", "warn")
        .output()
        .unwrap()
}

/// `cpt run CONFIG --out OUT` with `extra` arguments.
pub fn run(config: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cpt(&args)
}

/// What a command printed on standard error.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What a command printed on standard output.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The error line of a failed command.
pub fn error_line(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected failure, got success: {}",
        stderr(o)
    );
    stderr(o)
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {}", stderr(o)))
        .to_string()
}

/// The `[model]` and `[data]` sections of the tiny LLaMA the CLI tests train (one layer, width
/// 16, the bundled tokenizer, 16-token sequences), ending in a newline.
pub fn tiny_llama() -> String {
    format!(
        r#"[model]
architecture = "llama"
[model.config]
vocab_size = 1024
hidden_size = 16
intermediate_size = 32
num_hidden_layers = 1
num_attention_heads = 2
tie_word_embeddings = true
[data]
tokenizer = "{}"
seq_len = 16
"#,
        data("tokenizer.json")
    )
}
