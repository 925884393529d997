//! A tokenizer trained and saved here loads in Python's `tokenizers` and encodes identically.
//! Skipped (with a message) where Python or its `tokenizers` package is not installed.

mod common;

use std::process::Command;

use cpt_data::DEFAULT_EOS_TOKEN;

const SAMPLES: [&str; 6] = [
    "The quick brown fox jumps over the lazy dog.",
    "doc 12 alpha beta gamma",
    "  leading spaces and\ttabs\nand newlines  ",
    "ünïcödé, 日本語, emoji 🦀 and <|endoftext|> inside",
    "",
    "Continual pre-training adapts a language model to a new domain.",
];

fn python_has_tokenizers() -> bool {
    Command::new("python3")
        .args(["-c", "import tokenizers"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn python_encodes_our_tokenizer_identically() {
    if !python_has_tokenizers() {
        println!("skipped: python tokenizers not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    let tok = cpt_data::train_bpe(
        common::training_text().into_iter(),
        320,
        &[DEFAULT_EOS_TOKEN.to_string()],
        2,
    )
    .unwrap();
    tok.save(&path).unwrap();

    let script = r#"
import json, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
samples = json.loads(sys.stdin.read())
print(json.dumps({
    "ids": [tok.encode(s, add_special_tokens=False).ids for s in samples],
    "vocab": tok.get_vocab_size(with_added_tokens=True),
    "eos": tok.token_to_id("<|endoftext|>"),
    "decoded": [tok.decode(tok.encode(s, add_special_tokens=False).ids, skip_special_tokens=False) for s in samples],
}))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, path.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        serde_json::to_string(&SAMPLES).unwrap().as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    let ours: Vec<Vec<u32>> = SAMPLES.iter().map(|s| tok.encode(s).unwrap()).collect();
    let theirs: Vec<Vec<u32>> = serde_json::from_value(reply["ids"].clone()).unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(reply["vocab"].as_u64().unwrap() as usize, tok.vocab_size());
    assert_eq!(reply["eos"].as_u64().map(|v| v as u32), tok.eos_id());
    let decoded: Vec<String> = serde_json::from_value(reply["decoded"].clone()).unwrap();
    assert_eq!(decoded, SAMPLES);
}
