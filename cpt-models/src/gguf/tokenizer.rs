//! The tokenizer a GGUF file describes (`tokenizer.ggml.*`), as a Hugging Face `tokenizer.json`,
//! and back.
//!
//! Two vocabulary kinds are read, as transformers' GGUF loader builds them
//! (`integrations/gguf/gguf_tokenizer_mapping.py`):
//! - `gpt2`: byte-level BPE with the file's merges. The split before the byte-level step follows
//!   `tokenizer.ggml.pre`: the regex of the named family (Llama 3, Qwen 2, GPT-4o, Tekken) or
//!   GPT-2's. One departure from transformers 5.24: the families that llama.cpp splits into
//!   single digits first (`smollm`, `starcoder`, `refact`, ...; llama.cpp's `llama-vocab.cpp`)
//!   get a `Digits` step, which transformers drops, so numbers tokenize as the model saw them
//!   in training.
//! - `llama`: SentencePiece BPE with byte fallback; merges are rebuilt from the scores when the
//!   file has none (transformers' `generate_merges`), a `▁` is prepended to the text.
//!
//! Control tokens (type 3) and the bos/eos/unk/pad tokens become special added tokens,
//! user-defined ones (type 4) plain added tokens; `add_bos_token`/`add_eos_token` become the
//! post-processor. Export writes byte-level BPE tokenizers as the `gpt2` model.

use super::llama::string_array;
use super::reader::{GgufReader, MetaValue, ValueType};
use crate::error::{ModelError, Result};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// llama.cpp's token types (`llama_token_type`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` names and the split regex each stands for (transformers' table).
const PRE_SPLITS: [(&[&str], &str); 5] = [
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
            "dbrx",
            "smaug-bpe",
        ],
        LLAMA3_SPLIT,
    ),
    (
        &["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"],
        QWEN2_SPLIT,
    ),
    (&["qwen35"], QWEN35_SPLIT),
    (&["tekken"], TEKKEN_SPLIT),
    (
        &["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"],
        GPT4O_SPLIT,
    ),
];

/// Families llama.cpp splits into single digits before GPT-2's regex (`\p{N}` first).
const DIGIT_PRE: [&str; 7] = [
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "codeshell",
    "exaone",
    "minerva-7b",
];

/// GPT-2's map from bytes to printable characters (`bytes_to_unicode`).
pub fn byte_alphabet() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid code point")
        };
    }
    map
}

fn bad(path: &Path, message: String) -> ModelError {
    ModelError::Gguf {
        path: path.to_path_buf(),
        message,
    }
}

/// The tokenizer metadata of a GGUF file, checked.
struct GgufVocab {
    model: String,
    pre: Option<String>,
    tokens: Vec<String>,
    types: Vec<i32>,
    scores: Option<Vec<f32>>,
    merges: Option<Vec<String>>,
    special: [(&'static str, Option<u32>); 4],
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: Option<bool>,
}

fn read_vocab<R>(file: &GgufReader<R>) -> Result<GgufVocab> {
    let path = file.path();
    let key = |k: &str| format!("tokenizer.ggml.{k}");
    let string = |k: &str| -> Result<Option<String>> {
        match file.get(&key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| bad(path, format!("`{}` is not a string", key(k)))),
        }
    };
    let array = |k: &str| -> Result<Option<&[MetaValue]>> {
        match file.get(&key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .map(Some)
                .ok_or_else(|| bad(path, format!("`{}` is not an array", key(k)))),
        }
    };
    let strings = |k: &str| -> Result<Option<Vec<String>>> {
        array(k)?
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad(path, format!("`{}` holds a non-string", key(k))))
            })
            .transpose()
    };
    let model = string("model")?.ok_or_else(|| {
        bad(
            path,
            "no `tokenizer.ggml.model`: the file carries no tokenizer (give `data.tokenizer`)"
                .into(),
        )
    })?;
    let tokens =
        strings("tokens")?.ok_or_else(|| bad(path, "no `tokenizer.ggml.tokens`".into()))?;
    let n = tokens.len();
    let sized = |k: &str, len: usize| -> Result<()> {
        if len != n {
            return Err(bad(
                path,
                format!("`{}` has {len} entries for {n} tokens", key(k)),
            ));
        }
        Ok(())
    };
    let types = match array("token_type")? {
        None => vec![NORMAL; n],
        Some(a) => {
            sized("token_type", a.len())?;
            a.iter()
                .map(|v| v.as_f64().map(|x| x as i32))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    bad(
                        path,
                        "`tokenizer.ggml.token_type` holds a non-integer".into(),
                    )
                })?
        }
    };
    let scores = match array("scores")? {
        None => None,
        Some(a) => {
            sized("scores", a.len())?;
            Some(
                a.iter()
                    .map(|v| v.as_f64().map(|x| x as f32))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        bad(path, "`tokenizer.ggml.scores` holds a non-number".into())
                    })?,
            )
        }
    };
    let id = |k: &str| -> Result<Option<u32>> {
        match file.get(&key(k)) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(i) if (i as usize) < n => Ok(Some(i as u32)),
                _ => Err(bad(
                    path,
                    format!("`{}` is {v:?}, not a token id below {n}", key(k)),
                )),
            },
        }
    };
    let flag = |k: &str| -> Result<Option<bool>> {
        match file.get(&key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| bad(path, format!("`{}` is not a boolean", key(k)))),
        }
    };
    Ok(GgufVocab {
        pre: string("pre")?,
        types,
        scores,
        merges: strings("merges")?,
        special: [
            ("bos", id("bos_token_id")?),
            ("eos", id("eos_token_id")?),
            ("unk", id("unknown_token_id")?),
            ("pad", id("padding_token_id")?),
        ],
        // llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise.
        add_bos: flag("add_bos_token")?.unwrap_or(model == "llama"),
        add_eos: flag("add_eos_token")?.unwrap_or(false),
        add_space_prefix: flag("add_space_prefix")?,
        model,
        tokens,
    })
}

/// The Hugging Face `tokenizer.json` of the tokenizer that `file` describes.
pub fn tokenizer_json<R>(file: &GgufReader<R>) -> Result<Value> {
    let path = file.path();
    let vocab = read_vocab(file)?;
    let (tokens, model, pre_tokenizer, decoder) = match vocab.model.as_str() {
        "gpt2" => byte_level(&vocab, path)?,
        "llama" => sentencepiece(&vocab, path)?,
        other => {
            return Err(bad(
                path,
                format!("tokenizer model `{other}` is not supported (gpt2, llama)"),
            ));
        }
    };
    let special_ids: HashSet<u32> = vocab.special.iter().filter_map(|(_, id)| *id).collect();
    let byte_level = vocab.model == "gpt2";
    let alphabet: HashSet<char> = byte_alphabet().into_iter().collect();
    let mut added = Vec::new();
    for (i, (token, &ty)) in tokens.iter().zip(&vocab.types).enumerate() {
        let id = i as u32;
        // A control token outside the byte alphabet cannot be a byte-level token: a llama.cpp
        // mislabel that transformers skips too.
        let control =
            ty == CONTROL && (!byte_level || token.chars().all(|c| alphabet.contains(&c)));
        let special = control || special_ids.contains(&id);
        if special || ty == USER_DEFINED {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special,
            }));
        }
    }
    let name_of = |which: &str| {
        vocab
            .special
            .iter()
            .find(|(w, _)| *w == which)
            .and_then(|(_, id)| *id)
            .map(|id| (tokens[id as usize].clone(), id))
    };
    let post_processor = template(
        vocab.add_bos.then(|| name_of("bos")).flatten(),
        vocab.add_eos.then(|| name_of("eos")).flatten(),
    );
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": model,
    }))
}

/// A `TemplateProcessing` that puts `bos` before and `eos` after each sequence.
fn template(bos: Option<(String, u32)>, eos: Option<(String, u32)>) -> Value {
    let special =
        |t: &(String, u32), type_id: u32| json!({"SpecialToken": {"id": t.0, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (list, seqs) in [
        (&mut single, &[("A", 0)][..]),
        (&mut pair, &[("A", 0), ("B", 1)][..]),
    ] {
        for &(id, type_id) in seqs {
            list.extend(bos.as_ref().map(|t| special(t, type_id)));
            list.push(seq(id, type_id));
            list.extend(eos.as_ref().map(|t| special(t, type_id)));
        }
    }
    let mut specials = Map::new();
    for t in bos.iter().chain(eos.iter()) {
        specials.insert(
            t.0.clone(),
            json!({"id": t.0, "ids": [t.1], "tokens": [t.0]}),
        );
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}

type Parts = (Vec<String>, Value, Value, Value);

fn bpe_model(tokens: &[String], merges: Vec<(String, String)>, sentencepiece: bool) -> Value {
    let vocab: Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let merges: Vec<Value> = merges.into_iter().map(|(a, b)| json!([a, b])).collect();
    json!({
        "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
        "end_of_word_suffix": "", "fuse_unk": sentencepiece, "byte_fallback": sentencepiece,
        "ignore_merges": false, "vocab": vocab, "merges": merges,
    })
}

fn split_merges(merges: &[String], path: &Path) -> Result<Vec<(String, String)>> {
    merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| bad(path, format!("merge `{m}` is not two tokens")))
        })
        .collect()
}

fn byte_level(vocab: &GgufVocab, path: &Path) -> Result<Parts> {
    let alphabet = byte_alphabet();
    let spelled: HashSet<char> = alphabet.into_iter().collect();
    // Tokens outside the byte alphabet are respelled byte by byte, as transformers does.
    let tokens: Vec<String> = vocab
        .tokens
        .iter()
        .map(|t| match t.chars().all(|c| spelled.contains(&c)) {
            true => t.clone(),
            false => t.bytes().map(|b| alphabet[b as usize]).collect(),
        })
        .collect();
    let merges = split_merges(
        vocab.merges.as_ref().ok_or_else(|| {
            bad(
                path,
                "a `gpt2` tokenizer without `tokenizer.ggml.merges`".into(),
            )
        })?,
        path,
    )?;
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre = vocab.pre.as_deref().unwrap_or("default");
    let pre_tokenizer = match PRE_SPLITS.iter().find(|(names, _)| names.contains(&pre)) {
        Some((_, regex)) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            byte_level(false),
        ]}),
        None if DIGIT_PRE.contains(&pre) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level(true),
        ]}),
        None => byte_level(true),
    };
    let decoder = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
    let model = bpe_model(&tokens, merges, false);
    Ok((tokens, model, pre_tokenizer, decoder))
}

fn sentencepiece(vocab: &GgufVocab, path: &Path) -> Result<Parts> {
    let tokens = vocab.tokens.clone();
    let merges = match &vocab.merges {
        Some(m) => split_merges(m, path)?,
        None => {
            let scores = vocab.scores.as_ref().ok_or_else(|| {
                bad(
                    path,
                    "a `llama` tokenizer with neither merges nor scores".into(),
                )
            })?;
            merges_from_scores(&tokens, scores)
        }
    };
    let prepend = if vocab.add_space_prefix.unwrap_or(true) {
        "always"
    } else {
        "never"
    };
    let pre_tokenizer = json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": prepend, "split": false});
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if prepend == "always" {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let decoder = json!({"type": "Sequence", "decoders": decoders});
    let model = bpe_model(&tokens, merges, true);
    Ok((tokens, model, pre_tokenizer, decoder))
}

/// BPE merges implied by a SentencePiece vocabulary (transformers' `generate_merges` with
/// scores): every split of every token into two vocabulary tokens, best score first, then
/// shorter left and right parts first.
pub fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut score: Vec<(&str, f32)> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (i, (t, &s)) in tokens.iter().zip(scores).enumerate() {
        index.insert(t, i);
        match position.get(t.as_str()) {
            // A repeated token keeps its first position and takes the later score, as a
            // Python dict does.
            Some(&p) => score[p].1 = s,
            None => {
                position.insert(t, score.len());
                score.push((t, s));
            }
        }
    }
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for &(token, s) in &score {
        let mut local: Vec<(&str, &str, f32)> = token
            .char_indices()
            .skip(1)
            .map(|(at, _)| token.split_at(at))
            .filter(|(l, r)| index.contains_key(l) && index.contains_key(r))
            .map(|(l, r)| (l, r, s))
            .collect();
        local.sort_by_key(|(l, r, _)| (index[l], index[r]));
        merges.extend(local);
    }
    // Python's sorted(..., reverse=True) is stable: equal keys keep their order.
    merges.sort_by(|a, b| {
        let key = |m: &(&str, &str, f32)| (m.2, m.0.chars().count(), m.1.chars().count());
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0)
            .then(kb.1.cmp(&ka.1))
            .then(kb.2.cmp(&ka.2))
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

/// `tokenizer.ggml.*` metadata for a byte-level BPE `tokenizer.json` (`json`, read from `path`),
/// as llama.cpp's converter writes the `gpt2` model: tokens by id, padded with `[PADn]` to
/// `vocab_size`, their types, merges, the pre-tokenizer's name and the special ids
/// `(bos, eos)`.
pub fn gguf_tokenizer_metadata(
    json: &Value,
    path: &Path,
    vocab_size: usize,
    special_ids: (Option<u32>, Option<u32>),
) -> Result<Vec<(String, MetaValue)>> {
    let err = |message: String| bad(path, message);
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(err(format!(
            "tokenizer model {} cannot be exported to GGUF (byte-level BPE can)",
            model["type"]
        )));
    }
    let pre = exported_pre(&json["pre_tokenizer"]).ok_or_else(|| {
        err(format!(
            "pre-tokenizer {} has no llama.cpp equivalent (byte-level BPE with GPT-2's, Llama 3's or Qwen 2's split can be exported)",
            json["pre_tokenizer"]
        ))
    })?;
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| err("`model.vocab` is not an object".into()))?;
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let mut place = |token: &str, id: &Value, ty: i32| -> Result<()> {
        let id = id
            .as_u64()
            .filter(|&i| (i as usize) < vocab_size)
            .ok_or_else(|| {
                err(format!(
                    "token `{token}` has id {id}, outside the model's {vocab_size} embeddings"
                ))
            })?;
        tokens[id as usize] = Some((token.to_string(), ty));
        Ok(())
    };
    for (token, id) in vocab {
        place(token, id, NORMAL)?;
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let token = added["content"]
            .as_str()
            .ok_or_else(|| err("an added token without `content`".into()))?;
        let ty = if added["special"] == true {
            CONTROL
        } else {
            USER_DEFINED
        };
        place(token, &added["id"], ty)?;
    }
    let (names, types): (Vec<String>, Vec<MetaValue>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| match t {
            Some((name, ty)) => (name, MetaValue::I32(ty)),
            None => (format!("[PAD{i}]"), MetaValue::I32(UNUSED)),
        })
        .unzip();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .ok_or_else(|| err("`model.merges` is not an array".into()))?
        .iter()
        .map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(pair) => match (pair.first(), pair.get(1)) {
                (Some(Value::String(a)), Some(Value::String(b))) => Some(format!("{a} {b}")),
                _ => None,
            },
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| err("a merge is neither `a b` nor [a, b]".into()))?;
    let (add_bos, add_eos) = template_flags(&json["post_processor"]);
    let mut out = vec![
        (
            "tokenizer.ggml.model".into(),
            MetaValue::String("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".into(), MetaValue::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), string_array(names)),
        (
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array {
                item: ValueType::I32,
                values: types,
            },
        ),
        ("tokenizer.ggml.merges".into(), string_array(merges)),
    ];
    let (bos, eos) = special_ids;
    if let Some(bos) = bos {
        out.push(("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(bos)));
    }
    if let Some(eos) = eos {
        out.push(("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(eos)));
    }
    if let Some(unk) = model["unk_token"]
        .as_str()
        .and_then(|t| vocab.get(t)?.as_u64())
    {
        out.push((
            "tokenizer.ggml.unknown_token_id".into(),
            MetaValue::U32(unk as u32),
        ));
    }
    out.push((
        "tokenizer.ggml.add_bos_token".into(),
        MetaValue::Bool(add_bos),
    ));
    out.push((
        "tokenizer.ggml.add_eos_token".into(),
        MetaValue::Bool(add_eos),
    ));
    Ok(out)
}

/// The `tokenizer.ggml.pre` name of a byte-level pre-tokenizer, if llama.cpp has one.
fn exported_pre(pre: &Value) -> Option<&'static str> {
    let byte_level = |v: &Value, regex: bool| v["type"] == "ByteLevel" && v["use_regex"] == regex;
    if byte_level(pre, true) {
        return Some("gpt-2");
    }
    let parts = pre["pretokenizers"].as_array()?;
    match parts.as_slice() {
        [digits, bl]
            if digits["type"] == "Digits"
                && digits["individual_digits"] == true
                && byte_level(bl, true) =>
        {
            Some("smollm")
        }
        [split, bl] if split["type"] == "Split" && byte_level(bl, false) => {
            match split["pattern"]["Regex"].as_str()? {
                LLAMA3_SPLIT => Some("llama-bpe"),
                QWEN2_SPLIT => Some("qwen2"),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether a `TemplateProcessing` post-processor adds a special token before and after a
/// single sequence.
fn template_flags(post: &Value) -> (bool, bool) {
    let single = post["single"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let special = |v: Option<&Value>| v.is_some_and(|v| v.get("SpecialToken").is_some());
    (special(single.first()), special(single.last()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(a[b'!' as usize], '!');
        assert_eq!(a[b' ' as usize], '\u{120}');
        assert_eq!(a[b'\n' as usize], '\u{10a}');
        assert_eq!(a[0], '\u{100}');
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 256);
    }

    #[test]
    fn merges_from_scores_follow_generate_merges() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .map(String::from)
            .to_vec();
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -1.5];
        let merges = merges_from_scores(&tokens, &scores);
        // ab (-1) first; abc (-1.5) splits as a+bc and ab+c, sorted by longer parts first
        // within equal scores (reverse sort), then bc (-2).
        assert_eq!(
            merges,
            vec![
                ("a".into(), "b".into()),
                ("ab".into(), "c".into()),
                ("a".into(), "bc".into()),
                ("b".into(), "c".into()),
            ]
        );
    }

    #[test]
    fn template_flags_read_back() {
        let t = template(Some(("<s>".into(), 1)), None);
        assert_eq!(template_flags(&t), (true, false));
        let t = template(None, Some(("</s>".into(), 2)));
        assert_eq!(template_flags(&t), (false, true));
        assert_eq!(template_flags(&template(None, None)), (false, false));
    }
}
