//! Hostile input is a value, not a panic: truncations, flipped bytes and appended junk in
//! safetensors files, checkpoint manifests and run configs give typed errors naming the file.
//! The proptest cases act as a bounded fuzzer (byte mutation of valid files).

use cpt_core::checkpoint::{MANIFEST, save_checkpoint, verify_checkpoint};
use cpt_core::params::{HostTensor, NamedTensors};
use cpt_core::tensor_file::{encode_tensors, parse_tensors};
use cpt_core::{CoreError, RunConfig};
use proptest::prelude::*;
use std::collections::HashMap;
use std::path::Path;

fn valid_safetensors() -> Vec<u8> {
    let mut t = NamedTensors::new();
    t.insert(
        "w".into(),
        HostTensor {
            shape: vec![2, 3],
            values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        },
    );
    t.insert(
        "b".into(),
        HostTensor {
            shape: vec![3],
            values: vec![0.5; 3],
        },
    );
    encode_tensors(&t, HashMap::new(), Path::new("x.safetensors")).unwrap()
}

const CONFIG: &str = r#"
seed = 1
[model]
config = { vocab_size = 8 }
[data]
tokenizer = "t.json"
seq_len = 4
[[experiences]]
name = "a"
train = ["a.parquet"]
eval = ["b.parquet"]
steps = 3
[train]
batch_size = 2
[schedule]
kind = "cosine"
peak_lr = 0.1
"#;

/// (case, mutated bytes, expected error check)
fn safetensors_table() -> Vec<(&'static str, Vec<u8>)> {
    let good = valid_safetensors();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut huge_header = good.clone();
    huge_header[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let mut short_header = good.clone();
    short_header[..8].copy_from_slice(&3u64.to_le_bytes());
    let mut bad_json = good.clone();
    bad_json[8] = b'[';
    let mut bad_dtype = good.clone();
    let text = String::from_utf8_lossy(&good[8..8 + header_len]).replace("F32", "I64");
    bad_dtype.splice(8..8 + header_len, text.bytes());
    let mut bad_offsets = good.clone();
    let text = String::from_utf8_lossy(&good[8..8 + header_len]).replacen("[0,", "[4,", 1);
    bad_offsets.splice(8..8 + header_len, text.bytes());
    let mut junk = good.clone();
    junk.extend_from_slice(b"junk");
    let mut nan = good.clone();
    let at = good.len() - 4;
    nan[at..].copy_from_slice(&f32::NAN.to_le_bytes());
    vec![
        ("empty file", Vec::new()),
        ("4 bytes", good[..4].to_vec()),
        ("header length only", good[..8].to_vec()),
        ("inside the header", good[..8 + header_len / 2].to_vec()),
        ("mid-data", good[..8 + header_len + 6].to_vec()),
        ("last byte missing", good[..good.len() - 1].to_vec()),
        ("header length beyond the file", huge_header),
        ("header length too short", short_header),
        ("header not an object", bad_json),
        ("integer dtype", bad_dtype),
        ("offsets that do not tile the data", bad_offsets),
        ("appended junk", junk),
        ("a NaN value", nan),
    ]
}

#[test]
fn safetensors_corruption_table() {
    let path = Path::new("model.safetensors");
    for (case, bytes) in safetensors_table() {
        let err = parse_tensors(&bytes, path).expect_err(case);
        assert!(matches!(err, CoreError::Tensors { .. }), "{case}: {err:?}");
        assert!(
            err.to_string().contains("model.safetensors"),
            "{case}: {err}"
        );
    }
}

#[test]
fn manifest_corruption_table() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![("a.bin".to_string(), b"payload".to_vec())];
    let ckpt = save_checkpoint(dir.path(), "step-000000001", 1, "h", &files, 0).unwrap();
    let good = std::fs::read(ckpt.join(MANIFEST)).unwrap();
    let text = String::from_utf8(good.clone()).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("not JSON", b"\x00\x01garbage".to_vec()),
        (
            "wrong format",
            text.replace("cpt-checkpoint", "other").into_bytes(),
        ),
        (
            "future version",
            text.replace("\"version\": 1", "\"version\": 99")
                .into_bytes(),
        ),
        (
            "wrong size",
            text.replace("\"bytes\": 7", "\"bytes\": 8").into_bytes(),
        ),
        (
            "wrong checksum",
            text.replacen("\"checksum\": \"", "\"checksum\": \"f", 1)
                .into_bytes(),
        ),
        (
            "missing file listed",
            text.replace("a.bin", "b.bin").into_bytes(),
        ),
    ];
    for (case, bytes) in cases {
        std::fs::write(ckpt.join(MANIFEST), &bytes).unwrap();
        let err = verify_checkpoint(&ckpt).expect_err(case);
        assert!(
            matches!(err, CoreError::Checkpoint { .. }),
            "{case}: {err:?}"
        );
    }
    std::fs::write(ckpt.join(MANIFEST), &good).unwrap();
    assert!(verify_checkpoint(&ckpt).is_ok());
}

#[test]
fn config_corruption_table() {
    let cases = [
        ("empty", String::new(), "missing field"),
        ("truncated", CONFIG[..CONFIG.len() / 2].to_string(), ""),
        ("not TOML", "seed = = 1".to_string(), ""),
        (
            "wrong type",
            CONFIG.replace("seed = 1", "seed = \"one\""),
            "seed",
        ),
        (
            "unknown key",
            CONFIG.replace("seed = 1", "seed = 1\nsed = 2"),
            "sed",
        ),
        (
            "negative budget",
            CONFIG.replace("steps = 3", "steps = -3"),
            "steps",
        ),
        ("binary junk", "\u{0}\u{1}\u{2}".to_string(), ""),
    ];
    for (case, text, needle) in cases {
        let err = RunConfig::parse(&text, Path::new("run.toml"), &[]).expect_err(case);
        let msg = err.to_string();
        assert!(
            msg.contains("run.toml") || msg.contains("config key"),
            "{case}: {msg}"
        );
        assert!(msg.contains(needle), "{case}: `{needle}` not in {msg}");
        assert!(!msg.contains('\n'), "{case}: one line: {msg}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn mutated_safetensors_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut bytes = valid_safetensors();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = parse_tensors(&bytes, Path::new("fuzz.safetensors"));
    }

    #[test]
    fn mutated_configs_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = CONFIG.as_bytes().to_vec();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = RunConfig::parse(&text, Path::new("fuzz.toml"), &[]);
    }

    #[test]
    fn mutated_manifests_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![("a.bin".to_string(), b"payload".to_vec())];
        let ckpt = save_checkpoint(dir.path(), "step-000000001", 1, "h", &files, 0).unwrap();
        let mut bytes = std::fs::read(ckpt.join(MANIFEST)).unwrap();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        std::fs::write(ckpt.join(MANIFEST), &bytes).unwrap();
        let _ = verify_checkpoint(&ckpt);
    }
}
