//! GGUF, the single-file format of llama.cpp, Ollama and LM Studio: read (versions 2 and 3) and
//! write (version 3) files, dequantise F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K,
//! map LLaMA models and their tokenizers to and from cpt's config, Hugging Face names and
//! `tokenizer.json`.
//!
//! Written here rather than taken from a crate: the format is small (the reader, the block
//! decoders and the writer are a few hundred lines), cpt needs llama.cpp's exact conventions on
//! both sides (tensor names, rotary row order, converter metadata), and every error must name
//! the file and tensor in cpt's error type.

pub mod dequant;
pub mod llama;
pub mod reader;
pub mod tokenizer;
pub mod writer;

pub use dequant::GgmlType;
pub use llama::{ExportTokenizer, import_gguf, llama_config, load_llama_gguf, save_llama_gguf};
pub use reader::{GgufReader, MetaValue, open};
pub use tokenizer::tokenizer_json;
pub use writer::GgufWriter;

use std::path::Path;

/// Whether `path` names a GGUF file (by its extension).
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The `tokenizer.json` (serialised) of the tokenizer embedded in the GGUF file at `path`.
pub fn read_tokenizer_json(path: &Path) -> crate::Result<Vec<u8>> {
    let file = open(path)?;
    Ok(serde_json::to_vec(&tokenizer_json(&file)?).expect("JSON serialises"))
}
