//! Writing GGUF version 3 files: metadata in the order given, the tensor table, and the data
//! section with every tensor aligned to [`DEFAULT_ALIGNMENT`] bytes (as llama.cpp's
//! `gguf_writer` does). The file is written beside its target, fsynced and renamed into place.

use super::dequant::{GgmlType, quantize};
use super::reader::{DEFAULT_ALIGNMENT, MAGIC, MetaValue};
use crate::error::{ModelError, Result};
use cpt_core::atomic::write_atomic_with;
use std::io::{BufWriter, Write};
use std::path::Path;

/// A GGUF file being assembled in memory.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor>,
}

#[derive(Debug)]
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    bytes: Vec<u8>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set metadata `key` (replacing an earlier value, keeping its position).
    pub fn set(&mut self, key: &str, value: MetaValue) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Add tensor `name` of row-major `shape` (slowest first), stored as `ty`. `path` names
    /// the output in the error when the rows are not whole blocks of `ty`.
    pub fn add_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        values: &[f32],
        ty: GgmlType,
        path: &Path,
    ) -> Result<()> {
        let row = shape.last().copied().unwrap_or(1);
        if !row.is_multiple_of(ty.block_size()) || shape.iter().product::<usize>() != values.len() {
            return Err(ModelError::GgufTensor {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                message: format!(
                    "shape {shape:?} ({} values) cannot be stored as {} (rows must be whole blocks of {})",
                    values.len(),
                    ty.name(),
                    ty.block_size()
                ),
            });
        }
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ty,
            bytes: quantize(ty, values),
        });
        Ok(())
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out).expect("writing to memory");
        out
    }

    /// Write the file to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        Ok(write_atomic_with(path, |file| {
            let mut w = BufWriter::with_capacity(1 << 20, file);
            self.write_to(&mut w)?;
            w.flush()
        })?)
    }

    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let align = DEFAULT_ALIGNMENT;
        let mut header = Vec::new();
        header.extend(MAGIC);
        header.extend(3u32.to_le_bytes());
        header.extend((self.tensors.len() as u64).to_le_bytes());
        header.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut header, key);
            header.extend((value.value_type() as u32).to_le_bytes());
            put_value(&mut header, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_string(&mut header, &t.name);
            header.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend(d.to_le_bytes());
            }
            header.extend(t.ty.id().to_le_bytes());
            header.extend(offset.to_le_bytes());
            offset = (offset + t.bytes.len() as u64).div_ceil(align) * align;
        }
        pad(&mut header, align);
        w.write_all(&header)?;
        for t in &self.tensors {
            w.write_all(&t.bytes)?;
            let padding = (t.bytes.len() as u64).div_ceil(align) * align - t.bytes.len() as u64;
            w.write_all(&vec![0u8; padding as usize])?;
        }
        Ok(())
    }
}

fn pad(buf: &mut Vec<u8>, align: u64) {
    let len = buf.len() as u64;
    buf.resize((len.div_ceil(align) * align) as usize, 0);
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend((s.len() as u64).to_le_bytes());
    buf.extend(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => buf.push(*v),
        MetaValue::I8(v) => buf.push(*v as u8),
        MetaValue::U16(v) => buf.extend(v.to_le_bytes()),
        MetaValue::I16(v) => buf.extend(v.to_le_bytes()),
        MetaValue::U32(v) => buf.extend(v.to_le_bytes()),
        MetaValue::I32(v) => buf.extend(v.to_le_bytes()),
        MetaValue::F32(v) => buf.extend(v.to_le_bytes()),
        MetaValue::Bool(v) => buf.push(u8::from(*v)),
        MetaValue::String(s) => put_string(buf, s),
        MetaValue::Array { item, values } => {
            buf.extend((*item as u32).to_le_bytes());
            buf.extend((values.len() as u64).to_le_bytes());
            for v in values {
                put_value(buf, v);
            }
        }
        MetaValue::U64(v) => buf.extend(v.to_le_bytes()),
        MetaValue::I64(v) => buf.extend(v.to_le_bytes()),
        MetaValue::F64(v) => buf.extend(v.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::reader::{ValueType, from_bytes};
    use super::*;

    #[test]
    fn metadata_and_tensors_read_back() {
        let path = Path::new("mem.gguf");
        let mut w = GgufWriter::new();
        w.set("general.architecture", MetaValue::String("llama".into()));
        w.set("answer", MetaValue::U32(41));
        w.set("answer", MetaValue::U32(42));
        w.set(
            "list",
            MetaValue::Array {
                item: ValueType::String,
                values: vec![
                    MetaValue::String("a".into()),
                    MetaValue::String("bc".into()),
                ],
            },
        );
        w.set(
            "empty",
            MetaValue::Array {
                item: ValueType::I32,
                values: vec![],
            },
        );
        let values: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        w.add_tensor("t", &[2, 3], &values, GgmlType::F32, path)
            .unwrap();
        w.add_tensor("h", &[3], &values[..3], GgmlType::F16, path)
            .unwrap();
        assert!(
            w.add_tensor("q", &[2, 3], &values, GgmlType::Q8_0, path)
                .is_err()
        );
        let mut r = from_bytes(w.to_bytes(), path).unwrap();
        assert_eq!(r.version, 3);
        assert_eq!(r.metadata.len(), 4);
        assert_eq!(r.get("answer"), Some(&MetaValue::U32(42)));
        assert_eq!(r.get("empty").unwrap().as_array(), Some(&[][..]));
        assert_eq!(r.data_start % 32, 0);
        let t = r.tensor_f32("t").unwrap();
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.values, values);
        assert_eq!(r.tensor_info("h").unwrap().offset, 32);
        assert_eq!(r.tensor_f32("h").unwrap().values, &values[..3]);
    }
}
