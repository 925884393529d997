//! Safetensors files of named `f32` tensors: checkpoints, optimizer moments, strategy state.
//!
//! Reading accepts f32, f16 and bf16 (the dtypes Hugging Face checkpoints use) and converts to
//! f32; every value is checked to be finite, because safetensors itself does not.

use crate::atomic::write_atomic;
use crate::error::{CoreError, Result};
use crate::params::{HostTensor, NamedTensors};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Write `tensors` (as f32) and string `metadata` to `path`, atomically.
pub fn write_tensors(
    path: &Path,
    tensors: &NamedTensors,
    metadata: HashMap<String, String>,
) -> Result<()> {
    write_atomic(path, &encode_tensors(tensors, metadata, path)?)
}

/// Encode `tensors` (as f32) and `metadata` as safetensors bytes; `path` names them in errors.
pub fn encode_tensors(
    tensors: &NamedTensors,
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let raw = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), raw, t.shape.clone())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, raw, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), raw).map(|view| (name.as_str(), view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tensors_error(path, format!("cannot encode: {e}")))?;
    let metadata = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize(views, metadata)
        .map_err(|e| tensors_error(path, format!("cannot encode: {e}")))
}

/// Read every tensor of a safetensors file as f32, with the file's metadata.
pub fn read_tensors(path: &Path) -> Result<(NamedTensors, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| CoreError::io(path, e))?;
    parse_tensors(&bytes, path)
}

/// Parse safetensors bytes; `path` names the source in errors.
pub fn parse_tensors(bytes: &[u8], path: &Path) -> Result<(NamedTensors, HashMap<String, String>)> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| tensors_error(path, format!("not a valid safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| tensors_error(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = NamedTensors::new();
    for (name, view) in file.iter() {
        let values = decode_f32(&view).ok_or_else(|| {
            tensors_error(
                path,
                format!(
                    "tensor `{name}` has dtype {:?}, expected F32, F16 or BF16",
                    view.dtype()
                ),
            )
        })?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(tensors_error(
                path,
                format!(
                    "tensor `{name}` holds a non-finite value ({}) at flat index {i}",
                    values[i]
                ),
            ));
        }
        out.insert(
            name.to_string(),
            HostTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok((out, metadata))
}

fn decode_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    let pairs = || {
        data.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    };
    match view.dtype() {
        Dtype::F32 => Some(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F16 => Some(pairs().map(|b| half::f16::from_bits(b).to_f32()).collect()),
        Dtype::BF16 => Some(pairs().map(|b| half::bf16::from_bits(b).to_f32()).collect()),
        _ => None,
    }
}

fn tensors_error(path: &Path, message: String) -> CoreError {
    CoreError::Tensors {
        path: path.to_path_buf(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NamedTensors {
        let mut t = NamedTensors::new();
        t.insert(
            "a.weight".into(),
            HostTensor {
                shape: vec![2, 2],
                values: vec![1.0, -2.5, 3.0, f32::MIN_POSITIVE],
            },
        );
        t.insert(
            "b".into(),
            HostTensor {
                shape: vec![3],
                values: vec![0.1, 0.2, 0.3],
            },
        );
        t
    }

    #[test]
    fn round_trip_is_bit_exact_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let meta = HashMap::from([("format".to_string(), "cpt".to_string())]);
        write_tensors(&path, &sample(), meta.clone()).unwrap();
        let (back, back_meta) = read_tensors(&path).unwrap();
        assert_eq!(back, sample());
        assert_eq!(back_meta, meta);
    }

    #[test]
    fn truncated_file_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        write_tensors(&path, &sample(), HashMap::new()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 4, 8, 20, bytes.len() - 1] {
            let err = parse_tensors(&bytes[..cut], &path).unwrap_err();
            assert!(matches!(err, CoreError::Tensors { .. }), "cut {cut}: {err}");
            assert!(err.to_string().contains("t.safetensors"));
        }
    }

    #[test]
    fn non_finite_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let mut t = sample();
        t.get_mut("b").unwrap().values[1] = f32::NAN;
        write_tensors(&path, &t, HashMap::new()).unwrap();
        let err = read_tensors(&path).unwrap_err().to_string();
        assert!(err.contains("`b`") && err.contains("non-finite"), "{err}");
    }

    #[test]
    fn half_precision_is_converted() {
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::BF16, vec![2], &raw).unwrap();
        let bytes = safetensors::serialize([("x", view)], None).unwrap();
        let (t, _) = parse_tensors(&bytes, Path::new("x.safetensors")).unwrap();
        assert_eq!(t["x"].values, vec![1.5, -2.0]);
    }
}
