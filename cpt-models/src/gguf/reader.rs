//! Reading GGUF files (versions 2 and 3, little-endian): the header, the metadata key/value
//! pairs, the tensor table, and each tensor's data dequantised to f32.
//!
//! The format (llama.cpp's `docs/gguf.md`): magic `GGUF`, version (u32), tensor count and
//! metadata count (u64), the metadata, then per tensor its name, dimensions (fastest first), ggml
//! type and offset; the data section starts at the next multiple of `general.alignment` (32 by
//! default). Every length is checked against the bytes left in the file before anything is
//! allocated, and tensors must lie inside the file without overlapping, so a hostile file gives
//! an error naming it (and the tensor), never a panic or a huge allocation.

use super::dequant::{GgmlType, dequantize};
use crate::error::{ModelError, Result};
use cpt_core::params::HostTensor;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The first four bytes of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's limit on tensor dimensions.
const MAX_DIMS: u32 = 4;
/// Nesting limit for arrays of arrays.
const MAX_DEPTH: usize = 2;

/// The type tag of a metadata value (`gguf_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// u8.
    U8 = 0,
    /// i8.
    I8 = 1,
    /// u16.
    U16 = 2,
    /// i16.
    I16 = 3,
    /// u32.
    U32 = 4,
    /// i32.
    I32 = 5,
    /// f32.
    F32 = 6,
    /// A byte, 0 or 1.
    Bool = 7,
    /// u64 length and UTF-8 bytes.
    String = 8,
    /// Element type (u32), u64 count, elements.
    Array = 9,
    /// u64.
    U64 = 10,
    /// i64.
    I64 = 11,
    /// f64.
    F64 = 12,
}

impl ValueType {
    fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        [
            U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64,
        ]
        .into_iter()
        .find(|t| *t as u32 == id)
    }

    /// Smallest encoding of one value of this type, to bound array counts by the bytes left.
    fn min_bytes(self) -> u64 {
        match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 | Self::String => 8,
            Self::Array => 12,
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// u8.
    U8(u8),
    /// i8.
    I8(i8),
    /// u16.
    U16(u16),
    /// i16.
    I16(i16),
    /// u32.
    U32(u32),
    /// i32.
    I32(i32),
    /// f32.
    F32(f32),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Homogeneous array; `item` is its element type (kept for empty arrays).
    Array {
        /// Element type.
        item: ValueType,
        /// Elements.
        values: Vec<MetaValue>,
    },
    /// u64.
    U64(u64),
    /// i64.
    I64(i64),
    /// f64.
    F64(f64),
}

impl MetaValue {
    /// The type tag.
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array { .. } => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }

    /// A non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// A number of any type, as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// A string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// A boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array { values, .. } => Some(values),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as GGUF lists them: fastest-varying first (`[in, out]` for a linear weight).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub bytes: u64,
}

impl TensorInfo {
    /// Row-major shape (slowest first), as PyTorch and burn spell it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An open GGUF file: its metadata and tensor table; tensor data is read on demand.
pub struct GgufReader<R> {
    source: R,
    path: PathBuf,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensor table in file order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_start: u64,
    /// Alignment of the data section and of every tensor in it.
    pub alignment: u64,
}

/// Open `path` and read its header, metadata and tensor table.
pub fn open(path: &Path) -> Result<GgufReader<BufReader<File>>> {
    let file = File::open(path).map_err(|e| cpt_core::CoreError::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| cpt_core::CoreError::io(path, e))?
        .len();
    GgufReader::new(BufReader::with_capacity(1 << 20, file), len, path)
}

/// Read a GGUF file held in memory; `path` names it in errors.
pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<GgufReader<Cursor<Vec<u8>>>> {
    let len = bytes.len() as u64;
    GgufReader::new(Cursor::new(bytes), len, path)
}

impl<R> GgufReader<R> {
    /// The file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The table entry of tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// An error about tensor `name` of this file.
    pub fn tensor_err(&self, name: &str, message: String) -> ModelError {
        ModelError::GgufTensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            message,
        }
    }

    /// An error about this file.
    pub fn err(&self, message: String) -> ModelError {
        ModelError::Gguf {
            path: self.path.clone(),
            message,
        }
    }
}

impl<R: Read + Seek> GgufReader<R> {
    fn new(mut source: R, len: u64, path: &Path) -> Result<Self> {
        let mut p = Parser {
            r: &mut source,
            pos: 0,
            len,
            path,
        };
        let magic = p.bytes(4, "the magic number")?;
        if magic != MAGIC {
            return Err(p.err(format!(
                "not a GGUF file (starts with {magic:02x?}, not `GGUF`)"
            )));
        }
        let version = p.u32("the version")?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(p.err("big-endian GGUF files are not supported".into()));
        }
        if !(2..=3).contains(&version) {
            return Err(p.err(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        let tensor_count = p.u64("the tensor count")?;
        let kv_count = p.u64("the metadata count")?;
        // Each metadata pair takes at least 13 bytes, each tensor entry at least 24.
        p.check_count(kv_count, 13, "metadata entries")?;
        p.check_count(tensor_count, 24, "tensors")?;
        let mut metadata = Vec::with_capacity(kv_count as usize);
        let mut keys = HashSet::new();
        for _ in 0..kv_count {
            let key = p.string("a metadata key")?;
            let tag = p.u32(&format!("the type of `{key}`"))?;
            let ty = ValueType::from_id(tag)
                .ok_or_else(|| p.err(format!("metadata `{key}`: unknown value type {tag}")))?;
            let value = p.value(ty, &key, 0)?;
            if !keys.insert(key.clone()) {
                return Err(p.err(format!("metadata key `{key}` appears twice")));
            }
            metadata.push((key, value));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(p.err(format!("`general.alignment` is {v:?}, not a power of two")));
                }
            },
        };
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        let mut names = HashSet::new();
        for _ in 0..tensor_count {
            let name = p.string("a tensor name")?;
            let terr = |message: String| ModelError::GgufTensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
                message,
            };
            let n_dims = p.u32(&format!("the rank of tensor `{name}`"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(terr(format!("rank {n_dims} (expected 1 to {MAX_DIMS})")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(p.u64(&format!("the dimensions of tensor `{name}`"))?);
            }
            let ty =
                GgmlType::from_id(p.u32(&format!("the type of tensor `{name}`"))?).map_err(terr)?;
            let offset = p.u64(&format!("the offset of tensor `{name}`"))?;
            let elements = dims
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d))
                .filter(|&n| n > 0 && n <= len.saturating_mul(8))
                .ok_or_else(|| terr(format!("dimensions {dims:?} are empty or too large")))?;
            if !dims[0].is_multiple_of(ty.block_size() as u64) {
                return Err(terr(format!(
                    "rows of {} values are not whole {} blocks of {}",
                    dims[0],
                    ty.name(),
                    ty.block_size()
                )));
            }
            let bytes = elements / ty.block_size() as u64 * ty.block_bytes() as u64;
            if !offset.is_multiple_of(alignment) {
                return Err(terr(format!(
                    "offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            if !names.insert(name.clone()) {
                return Err(terr("appears twice in the tensor table".into()));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                bytes,
            });
        }
        let data_start = p.pos.div_ceil(alignment) * alignment;
        let mut spans: Vec<(u64, u64, &str)> = tensors
            .iter()
            .map(|t| (t.offset, t.offset.saturating_add(t.bytes), t.name.as_str()))
            .collect();
        spans.sort();
        let mut covered = 0u64;
        for (start, end, name) in spans {
            let terr = |message: String| ModelError::GgufTensor {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                message,
            };
            if start < covered {
                return Err(terr("overlaps the data of another tensor".into()));
            }
            if data_start.saturating_add(end) > len {
                return Err(terr(format!(
                    "data ends at byte {}, past the end of the file ({len} bytes): truncated?",
                    data_start.saturating_add(end)
                )));
            }
            covered = end;
        }
        Ok(Self {
            source,
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            data_start,
            alignment,
        })
    }

    /// The stored bytes of tensor `name`.
    pub fn tensor_bytes(&mut self, name: &str) -> Result<(TensorInfo, Vec<u8>)> {
        let info = self
            .tensor_info(name)
            .cloned()
            .ok_or_else(|| self.tensor_err(name, "not in the file".into()))?;
        let mut bytes = vec![0u8; info.bytes as usize];
        let read = self
            .source
            .seek(SeekFrom::Start(self.data_start + info.offset))
            .and_then(|_| self.source.read_exact(&mut bytes));
        read.map_err(|e| self.tensor_err(name, format!("reading its data: {e}")))?;
        Ok((info, bytes))
    }

    /// Tensor `name` dequantised to f32, in row-major shape; a non-finite value is an error.
    pub fn tensor_f32(&mut self, name: &str) -> Result<HostTensor> {
        let (info, bytes) = self.tensor_bytes(name)?;
        let values = dequantize(info.ty, &bytes);
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(self.tensor_err(
                name,
                format!("value {} at index {i} is not finite", values[i]),
            ));
        }
        Ok(HostTensor {
            shape: info.shape(),
            values,
        })
    }
}

/// Sequential reads of the header with the byte position and the file length, for bounds.
struct Parser<'a, R> {
    r: &'a mut R,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl<R: Read> Parser<'_, R> {
    fn err(&self, message: String) -> ModelError {
        ModelError::Gguf {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        if n > self.len - self.pos {
            return Err(self.err(format!(
                "truncated: {what} needs {n} bytes at byte {}, the file has {}",
                self.pos, self.len
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| self.err(format!("reading {what} at byte {}: {e}", self.pos)))?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self
            .bytes(N as u64, what)?
            .try_into()
            .expect("read N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn check_count(&self, count: u64, min_bytes: u64, what: &str) -> Result<()> {
        if count.saturating_mul(min_bytes) > self.len - self.pos {
            return Err(self.err(format!(
                "{count} {what} cannot fit in the {} bytes left at byte {}",
                self.len - self.pos,
                self.pos
            )));
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let at = self.pos;
        let bytes = self.bytes(n, what)?;
        String::from_utf8(bytes).map_err(|_| self.err(format!("{what} at byte {at} is not UTF-8")))
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<MetaValue> {
        let what = format!("the value of `{key}`");
        Ok(match ty {
            ValueType::U8 => MetaValue::U8(self.array::<1>(&what)?[0]),
            ValueType::I8 => MetaValue::I8(self.array::<1>(&what)?[0] as i8),
            ValueType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            ValueType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            ValueType::U32 => MetaValue::U32(self.u32(&what)?),
            ValueType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            ValueType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            ValueType::U64 => MetaValue::U64(self.u64(&what)?),
            ValueType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            ValueType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            ValueType::Bool => match self.array::<1>(&what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.err(format!("metadata `{key}`: boolean byte {b}"))),
            },
            ValueType::String => MetaValue::String(self.string(&what)?),
            ValueType::Array => {
                let tag = self.u32(&what)?;
                let item = ValueType::from_id(tag).ok_or_else(|| {
                    self.err(format!(
                        "metadata `{key}`: unknown array element type {tag}"
                    ))
                })?;
                if item == ValueType::Array && depth + 1 >= MAX_DEPTH {
                    return Err(self.err(format!("metadata `{key}`: arrays nested too deep")));
                }
                let count = self.u64(&what)?;
                self.check_count(count, item.min_bytes(), &format!("elements of `{key}`"))?;
                let values = (0..count)
                    .map(|_| self.value(item, key, depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                MetaValue::Array { item, values }
            }
        })
    }
}
