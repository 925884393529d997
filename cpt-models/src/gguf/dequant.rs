//! ggml's tensor types: their block layouts (llama.cpp's `ggml-common.h`), dequantisation to
//! f32 (`dequantize_row_*` of `ggml-quants.c`) and quantisation from f32.
//!
//! Quantisation of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 follows llama.cpp's
//! reference (`quantize_row_*_ref`) and the `gguf` Python package byte for byte. The K-quants
//! (Q2_K to Q6_K) are quantised by a plain min/max rule: valid blocks that llama.cpp reads, but
//! without llama.cpp's iterative scale search, so less accurate than `llama-quantize`.

use half::{bf16, f16};

/// Elements of a K-quant super-block.
const QK_K: usize = 256;

/// A ggml tensor type that cpt reads and writes (variants spelled as ggml names them).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 32 values: an f16 scale and 32 signed bytes.
    Q8_0,
    /// 32 values: an f16 scale and 32 4-bit values offset by 8.
    Q4_0,
    /// 32 values: f16 scale and minimum, 32 4-bit values.
    Q4_1,
    /// 32 values: an f16 scale, 32 high bits, 32 4-bit values; 5-bit values offset by 16.
    Q5_0,
    /// 32 values: f16 scale and minimum, 32 high bits, 32 4-bit values.
    Q5_1,
    /// 256 values: 16 sub-blocks of 16 with 4-bit scales and minima, 2-bit values.
    Q2_K,
    /// 256 values: 16 sub-blocks of 16 with signed 6-bit scales, 3-bit values offset by 4.
    Q3_K,
    /// 256 values: 8 sub-blocks of 32 with 6-bit scales and minima, 4-bit values.
    Q4_K,
    /// 256 values: as Q4_K with a fifth bit per value.
    Q5_K,
    /// 256 values: 16 sub-blocks of 16 with 8-bit scales, 6-bit signed values.
    Q6_K,
}

/// Every type cpt reads, in ggml id order.
pub const SUPPORTED: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::BF16,
];

/// ggml's names of its type ids (`ggml_type`), for error messages about types cpt lacks.
const GGML_TYPE_NAMES: [&str; 40] = [
    "F32",
    "F16",
    "Q4_0",
    "Q4_1",
    "Q4_2",
    "Q4_3",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q8_1",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "Q8_K",
    "IQ2_XXS",
    "IQ2_XS",
    "IQ3_XXS",
    "IQ1_S",
    "IQ4_NL",
    "IQ3_S",
    "IQ2_S",
    "IQ4_XS",
    "I8",
    "I16",
    "I32",
    "I64",
    "F64",
    "IQ1_M",
    "BF16",
    "Q4_0_4_4",
    "Q4_0_4_8",
    "Q4_0_8_8",
    "TQ1_0",
    "TQ2_0",
    "IQ4_NL_4_4",
    "IQ4_NL_4_8",
    "IQ4_NL_8_8",
    "MXFP4",
];

impl GgmlType {
    /// The type with ggml id `id`; the error says which type it is when cpt lacks it.
    pub fn from_id(id: u32) -> Result<Self, String> {
        SUPPORTED.into_iter().find(|t| t.id() == id).ok_or_else(|| {
            match GGML_TYPE_NAMES.get(id as usize) {
                Some(name) => format!(
                    "type {name} (ggml id {id}) is not supported (supported: {})",
                    supported_names()
                ),
                None => format!("unknown ggml type id {id}"),
            }
        })
    }

    /// The type called `name` (`f16`, `Q8_0`, ...; case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        SUPPORTED
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// ggml's id (`ggml_type`).
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2_K => 10,
            Self::Q3_K => 11,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::BF16 => 30,
        }
    }

    /// ggml's name.
    pub fn name(self) -> &'static str {
        GGML_TYPE_NAMES[self.id() as usize]
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q8_0 | Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 => 32,
            Self::Q2_K | Self::Q3_K | Self::Q4_K | Self::Q5_K | Self::Q6_K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q2_K => 84,
            Self::Q3_K => 110,
            Self::Q4_K => 144,
            Self::Q5_K => 176,
            Self::Q6_K => 210,
        }
    }

    /// Bytes of `n` values, or `None` when `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        n.is_multiple_of(self.block_size())
            .then(|| n / self.block_size() * self.block_bytes())
    }
}

fn supported_names() -> String {
    SUPPORTED.map(GgmlType::name).join(", ")
}

fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// The f32 values of `bytes` stored as `ty`.
///
/// # Panics
/// If `bytes` is not a whole number of blocks (callers check sizes against the file first).
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % ty.block_bytes(), 0, "whole blocks only");
    let mut out = Vec::with_capacity(bytes.len() / ty.block_bytes() * ty.block_size());
    for block in bytes.chunks_exact(ty.block_bytes()) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes(block.try_into().expect("4 bytes"))),
            GgmlType::F16 => out.push(half_at(block, 0)),
            GgmlType::BF16 => out.push(bf16::from_le_bytes([block[0], block[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = half_at(block, 0);
                out.extend(block[2..].iter().map(|&q| q as i8 as f32 * d));
            }
            GgmlType::Q4_0 => {
                let d = half_at(block, 0);
                let qs = &block[2..];
                out.extend(qs.iter().map(|&q| ((q & 0xF) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
            GgmlType::Q4_1 => {
                let (d, m) = (half_at(block, 0), half_at(block, 2));
                let qs = &block[4..];
                out.extend(qs.iter().map(|&q| (q & 0xF) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
            GgmlType::Q5_0 => {
                let d = half_at(block, 0);
                let values = five_bit_values(&block[2..]);
                out.extend(values.iter().map(|&q| (q as i32 - 16) as f32 * d));
            }
            GgmlType::Q5_1 => {
                let (d, m) = (half_at(block, 0), half_at(block, 2));
                let values = five_bit_values(&block[4..]);
                out.extend(values.iter().map(|&q| q as f32 * d + m));
            }
            GgmlType::Q2_K => dequantize_q2_k(block, &mut out),
            GgmlType::Q3_K => dequantize_q3_k(block, &mut out),
            GgmlType::Q4_K => dequantize_q4_k(block, &mut out),
            GgmlType::Q5_K => dequantize_q5_k(block, &mut out),
            GgmlType::Q6_K => dequantize_q6_k(block, &mut out),
        }
    }
    out
}

/// The 32 unsigned 5-bit values of a Q5_0/Q5_1 block from its 4 bytes of high bits (bit `i` of
/// the little-endian u32 belongs to value `i`) and 16 bytes of nibbles (value `j` in the low
/// nibble of byte `j`, value `j + 16` in the high one).
fn five_bit_values(bytes: &[u8]) -> [u8; 32] {
    let high = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    let qs = &bytes[4..20];
    std::array::from_fn(|i| {
        let nibble = if i < 16 { qs[i] & 0xF } else { qs[i - 16] >> 4 };
        nibble | ((((high >> i) & 1) as u8) << 4)
    })
}

/// Where value `e` of a Q2_K/Q3_K super-block keeps its 2 low bits: byte `32·(e / 128) + e % 32`
/// of the 64 packed bytes, at bit `2·((e / 32) % 4)`.
fn two_bit_slot(e: usize) -> (usize, u32) {
    (32 * (e / 128) + e % 32, 2 * ((e / 32) % 4) as u32)
}

/// Q2_K: 16 scale bytes (scale in the low nibble, minimum in the high one), 64 bytes of 2-bit
/// values, `d`, `dmin` (f16).
fn dequantize_q2_k(block: &[u8], out: &mut Vec<f32>) {
    let (scales, qs) = (&block[..16], &block[16..80]);
    let (d, dmin) = (half_at(block, 80), half_at(block, 82));
    out.extend((0..QK_K).map(|e| {
        let sc = scales[e / 16];
        let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
        let (byte, shift) = two_bit_slot(e);
        dl * ((qs[byte] >> shift) & 3) as f32 - ml
    }));
}

/// The 16 signed 6-bit sub-block scales of Q3_K's 12 scale bytes: scale `s` has its low 4 bits
/// in byte `s % 8` (low nibble for `s < 8`, high nibble after) and its high 2 bits in byte
/// `8 + s % 4` at bit `2·(s / 4)`; stored offset by 32.
fn q3_k_scales(packed: &[u8]) -> [i8; 16] {
    std::array::from_fn(|s| {
        let low = if s < 8 {
            packed[s] & 0xF
        } else {
            packed[s - 8] >> 4
        };
        let high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    })
}

/// Q3_K: 32 bytes of high bits (value `e`'s in byte `e % 32` at bit `e / 32`), 64 bytes of 2-bit
/// values, 12 scale bytes, `d` (f16). A value is its 2 low bits minus 4 when its high bit is 0.
fn dequantize_q3_k(block: &[u8], out: &mut Vec<f32>) {
    let (hmask, qs) = (&block[..32], &block[32..96]);
    let scales = q3_k_scales(&block[96..108]);
    let d = half_at(block, 108);
    out.extend((0..QK_K).map(|e| {
        let dl = d * scales[e / 16] as f32;
        let (byte, shift) = two_bit_slot(e);
        let low = ((qs[byte] >> shift) & 3) as i32;
        let high = (hmask[e % 32] >> (e / 32)) & 1;
        dl * (low - if high == 0 { 4 } else { 0 }) as f32
    }));
}

/// The 6-bit scale and minimum of sub-block `j` packed in Q4_K/Q5_K's 12 scale bytes
/// (`get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K: `d`, `dmin` (f16), 12 scale bytes, 128 bytes of 4-bit values.
fn dequantize_q4_k(block: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (half_at(block, 0), half_at(block, 2));
    let scales = &block[4..16];
    let qs = &block[16..144];
    for (pair, q) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * pair, scales);
        let (sc2, m2) = scale_min_k4(2 * pair + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        out.extend(q.iter().map(|&v| d1 * (v & 0xF) as f32 - min1));
        out.extend(q.iter().map(|&v| d2 * (v >> 4) as f32 - min2));
    }
}

/// Q5_K: `d`, `dmin` (f16), 12 scale bytes, 32 bytes of high bits, 128 bytes of low nibbles.
fn dequantize_q5_k(block: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (half_at(block, 0), half_at(block, 2));
    let scales = &block[4..16];
    let qh = &block[16..48];
    let ql = &block[48..176];
    for (pair, q) in ql.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * pair, scales);
        let (sc2, m2) = scale_min_k4(2 * pair + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * pair), 2u8 << (2 * pair));
        let high = |l: usize, bit: u8| if qh[l] & bit != 0 { 16.0 } else { 0.0 };
        out.extend((0..32).map(|l| d1 * ((q[l] & 0xF) as f32 + high(l, u1)) - min1));
        out.extend((0..32).map(|l| d2 * ((q[l] >> 4) as f32 + high(l, u2)) - min2));
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed scales, `d` (f16).
fn dequantize_q6_k(block: &[u8], out: &mut Vec<f32>) {
    let d = half_at(block, 208);
    let start = out.len();
    out.resize(start + QK_K, 0.0);
    let y = &mut out[start..];
    for half in 0..2 {
        let ql = &block[64 * half..64 * half + 64];
        let qh = &block[128 + 32 * half..128 + 32 * half + 32];
        let sc = &block[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| d * (sc[is + k] as i8) as f32;
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
    }
}

/// `values` stored as `ty`.
///
/// # Panics
/// If `values.len()` is not a multiple of the type's block size.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Vec<u8> {
    assert_eq!(values.len() % ty.block_size(), 0, "whole blocks only");
    let mut out = Vec::with_capacity(values.len() / ty.block_size() * ty.block_bytes());
    for block in values.chunks_exact(ty.block_size()) {
        match ty {
            GgmlType::F32 => out.extend(block[0].to_le_bytes()),
            GgmlType::F16 => out.extend(f16::from_f32(block[0]).to_le_bytes()),
            GgmlType::BF16 => out.extend(bf16::from_f32(block[0]).to_le_bytes()),
            GgmlType::Q8_0 => quantize_q8_0(block, &mut out),
            GgmlType::Q4_0 => quantize_q4_0(block, &mut out),
            GgmlType::Q4_1 => quantize_q4_1(block, &mut out),
            GgmlType::Q5_0 => quantize_q5_0(block, &mut out),
            GgmlType::Q5_1 => quantize_q5_1(block, &mut out),
            GgmlType::Q2_K => quantize_q2_k(block, &mut out),
            GgmlType::Q3_K => quantize_q3_k(block, &mut out),
            GgmlType::Q4_K => quantize_k(block, 4, &mut out),
            GgmlType::Q5_K => quantize_k(block, 5, &mut out),
            GgmlType::Q6_K => quantize_q6_k(block, &mut out),
        }
    }
    out
}

/// 1/d, or 0 for an all-zero block (as llama.cpp).
fn inverse(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// `quantize_row_q8_0_ref`: d = max|x| / 127, q = round(x / d) (half away from zero).
fn quantize_q8_0(block: &[f32], out: &mut Vec<u8>) {
    let amax = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(block.iter().map(|x| (x * id).round() as i8 as u8));
}

/// `quantize_row_q4_0_ref`: d = (the value of largest magnitude) / -8, q = x / d + 8.
fn quantize_q4_0(block: &[f32], out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &x in block {
        if amax < x.abs() {
            amax = x.abs();
            max = x;
        }
    }
    let d = max / -8.0;
    let id = inverse(d);
    out.extend(f16::from_f32(d).to_le_bytes());
    let q = |x: f32| ((x * id + 8.5) as i8).min(15) as u8;
    out.extend((0..16).map(|j| q(block[j]) | (q(block[j + 16]) << 4)));
}

/// `quantize_row_q4_1_ref`: d = (max - min) / 15, m = min, q = (x - m) / d.
fn quantize_q4_1(block: &[f32], out: &mut Vec<u8>) {
    let min = block.iter().copied().fold(f32::MAX, f32::min);
    let max = block.iter().copied().fold(f32::MIN, f32::max);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(f16::from_f32(min).to_le_bytes());
    let q = |x: f32| (((x - min) * id + 0.5) as i8).min(15) as u8;
    out.extend((0..16).map(|j| q(block[j]) | (q(block[j + 16]) << 4)));
}

/// The high bits and nibbles of 32 unsigned 5-bit values (the layout [`five_bit_values`] reads).
fn pack_five_bit(q: &[u8; 32], out: &mut Vec<u8>) {
    let high = (0..32).fold(0u32, |h, i| h | (((q[i] >> 4) as u32) << i));
    out.extend(high.to_le_bytes());
    out.extend((0..16).map(|j| (q[j] & 0xF) | (q[j + 16] << 4)));
}

/// `quantize_row_q5_0_ref`: d = (the value of largest magnitude) / -16, q = x / d + 16.
fn quantize_q5_0(block: &[f32], out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &x in block {
        if amax < x.abs() {
            amax = x.abs();
            max = x;
        }
    }
    let d = max / -16.0;
    let id = inverse(d);
    out.extend(f16::from_f32(d).to_le_bytes());
    let q = std::array::from_fn(|j| ((block[j] * id + 16.5) as i8).min(31) as u8);
    pack_five_bit(&q, out);
}

/// `quantize_row_q5_1_ref`: d = (max - min) / 31, m = min, q = (x - m) / d.
fn quantize_q5_1(block: &[f32], out: &mut Vec<u8>) {
    let min = block.iter().copied().fold(f32::MAX, f32::min);
    let max = block.iter().copied().fold(f32::MIN, f32::max);
    let d = (max - min) / 31.0;
    let id = inverse(d);
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(f16::from_f32(min).to_le_bytes());
    let q = std::array::from_fn(|j| (((block[j] - min) * id + 0.5) as i8).min(31) as u8);
    pack_five_bit(&q, out);
}

/// 2-bit values `q` (0..=3) packed as [`two_bit_slot`] places them.
fn pack_two_bit(q: &[u8; QK_K]) -> [u8; 64] {
    let mut packed = [0u8; 64];
    for (e, &v) in q.iter().enumerate() {
        let (byte, shift) = two_bit_slot(e);
        packed[byte] |= (v & 3) << shift;
    }
    packed
}

/// Q2_K by min/max, as [`quantize_k`] with sub-blocks of 16, 4-bit scales and minima and 3
/// steps per sub-block.
fn quantize_q2_k(block: &[f32], out: &mut Vec<u8>) {
    let mut scales = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    for (j, sub) in block.chunks_exact(16).enumerate() {
        let lo = sub.iter().copied().fold(0.0f32, f32::min);
        let hi = sub.iter().copied().fold(f32::MIN, f32::max);
        scales[j] = (hi - lo) / 3.0;
        mins[j] = -lo;
    }
    let d = f16::from_f32(scales.iter().copied().fold(0.0, f32::max) / 15.0);
    let dmin = f16::from_f32(mins.iter().copied().fold(0.0, f32::max) / 15.0);
    let (df, dminf) = (d.to_f32(), dmin.to_f32());
    let mut packed_scales = [0u8; 16];
    let mut q = [0u8; QK_K];
    for (j, sub) in block.chunks_exact(16).enumerate() {
        let sc = (scales[j] * inverse(df)).ceil().clamp(0.0, 15.0) as u8;
        let m = (mins[j] * inverse(dminf)).round().clamp(0.0, 15.0) as u8;
        packed_scales[j] = sc | (m << 4);
        let (id, offset) = (inverse(df * sc as f32), dminf * m as f32);
        for (l, &x) in sub.iter().enumerate() {
            q[16 * j + l] = ((x + offset) * id).round().clamp(0.0, 3.0) as u8;
        }
    }
    out.extend(packed_scales);
    out.extend(pack_two_bit(&q));
    out.extend(d.to_le_bytes());
    out.extend(dmin.to_le_bytes());
}

/// Q3_K by largest magnitude, as Q4_0 per sub-block of 16: the signed scale maps the value of
/// largest magnitude to -4 (its size rounded up to a 6-bit multiple of `d`), values round to
/// -4..=3.
fn quantize_q3_k(block: &[f32], out: &mut Vec<u8>) {
    let mut scales = [0.0f32; 16];
    for (j, sub) in block.chunks_exact(16).enumerate() {
        let extreme = sub
            .iter()
            .copied()
            .fold(0.0f32, |m, x| match x.abs() > m.abs() {
                true => x,
                false => m,
            });
        scales[j] = extreme / -4.0;
    }
    let d = f16::from_f32(scales.iter().fold(0.0f32, |m, s| m.max(s.abs())) / 31.0);
    let df = d.to_f32();
    let sc: [i8; 16] = std::array::from_fn(|j| {
        let size = (scales[j].abs() * inverse(df)).ceil().min(31.0);
        (size.copysign(scales[j])) as i8
    });
    let mut q = [0u8; QK_K];
    for (j, sub) in block.chunks_exact(16).enumerate() {
        let id = inverse(df * sc[j] as f32);
        for (l, &x) in sub.iter().enumerate() {
            q[16 * j + l] = ((x * id).round().clamp(-4.0, 3.0) as i8 + 4) as u8;
        }
    }
    let mut hmask = [0u8; 32];
    for (e, &v) in q.iter().enumerate() {
        hmask[e % 32] |= (v >> 2) << (e / 32);
    }
    let mut packed_scales = [0u8; 12];
    for (s, &v) in sc.iter().enumerate() {
        let stored = (v + 32) as u8;
        packed_scales[s % 8] |= (stored & 0xF) << if s < 8 { 0 } else { 4 };
        packed_scales[8 + s % 4] |= (stored >> 4) << (2 * (s / 4));
    }
    out.extend(hmask);
    out.extend(pack_two_bit(&q));
    out.extend(packed_scales);
    out.extend(d.to_le_bytes());
}

/// Q4_K (`bits` 4) or Q5_K (`bits` 5) by min/max: each sub-block of 32 spans [min(0, min), max]
/// in `2^bits - 1` steps; scales and minima are stored in 6 bits relative to `d` and `dmin`.
/// Scales round up, so the stored range covers the sub-block and only the minimum's rounding
/// (at most `dmin`) adds to the half-step error.
fn quantize_k(block: &[f32], bits: u32, out: &mut Vec<u8>) {
    let levels = ((1u32 << bits) - 1) as f32;
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    for (j, sub) in block.chunks_exact(32).enumerate() {
        let lo = sub.iter().copied().fold(0.0f32, f32::min);
        let hi = sub.iter().copied().fold(f32::MIN, f32::max);
        scales[j] = (hi - lo) / levels;
        mins[j] = -lo;
    }
    let d = f16::from_f32(scales.iter().copied().fold(0.0, f32::max) / 63.0);
    let dmin = f16::from_f32(mins.iter().copied().fold(0.0, f32::max) / 63.0);
    let (df, dminf) = (d.to_f32(), dmin.to_f32());
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        sc[j] = (scales[j] * inverse(df)).ceil().clamp(0.0, 63.0) as u8;
        m[j] = (mins[j] * inverse(dminf)).round().clamp(0.0, 63.0) as u8;
    }
    let mut packed = [0u8; 12];
    for j in 0..4 {
        packed[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        packed[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        packed[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
    }
    let mut q = [0u8; QK_K];
    for (j, sub) in block.chunks_exact(32).enumerate() {
        let step = df * sc[j] as f32;
        let offset = dminf * m[j] as f32;
        let id = inverse(step);
        for (l, &x) in sub.iter().enumerate() {
            q[32 * j + l] = ((x + offset) * id).round().clamp(0.0, levels) as u8;
        }
    }
    out.extend(d.to_le_bytes());
    out.extend(dmin.to_le_bytes());
    out.extend(packed);
    if bits == 5 {
        let mut qh = [0u8; 32];
        for (i, &v) in q.iter().enumerate() {
            if v & 16 != 0 {
                qh[i % 32] |= 1 << (i / 32);
            }
        }
        out.extend(qh);
    }
    for pair in 0..4 {
        let (a, b) = (
            &q[64 * pair..64 * pair + 32],
            &q[64 * pair + 32..64 * pair + 64],
        );
        out.extend((0..32).map(|l| (a[l] & 0xF) | ((b[l] & 0xF) << 4)));
    }
}

/// Q6_K by max magnitude: each sub-block of 16 gets a scale max|x| / 32 (stored as a signed
/// byte relative to `d`), values round to -32..=31.
fn quantize_q6_k(block: &[f32], out: &mut Vec<u8>) {
    let mut scales = [0.0f32; 16];
    for (j, sub) in block.chunks_exact(16).enumerate() {
        scales[j] = sub.iter().fold(0.0f32, |m, x| m.max(x.abs())) / 32.0;
    }
    let d = f16::from_f32(scales.iter().copied().fold(0.0, f32::max) / 127.0);
    let df = d.to_f32();
    let sc: Vec<i8> = scales
        .iter()
        .map(|s| (s * inverse(df)).ceil().clamp(0.0, 127.0) as i8)
        .collect();
    let mut q = [0u8; QK_K];
    for (j, sub) in block.chunks_exact(16).enumerate() {
        let id = inverse(df * sc[j] as f32);
        for (l, &x) in sub.iter().enumerate() {
            q[16 * j + l] = ((x * id).round().clamp(-32.0, 31.0) as i32 + 32) as u8;
        }
    }
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for half in 0..2 {
        let q = &q[128 * half..128 * half + 128];
        for l in 0..32 {
            let (q1, q2, q3, q4) = (q[l], q[l + 32], q[l + 64], q[l + 96]);
            ql[64 * half + l] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            ql[64 * half + l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            qh[32 * half + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    out.extend(ql);
    out.extend(qh);
    out.extend(sc.iter().map(|&s| s as u8));
    out.extend(d.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_ggml() {
        // ggml's type_traits: (blck_size, type_size).
        let expected = [
            (GgmlType::F32, 1, 4),
            (GgmlType::F16, 1, 2),
            (GgmlType::BF16, 1, 2),
            (GgmlType::Q8_0, 32, 34),
            (GgmlType::Q4_0, 32, 18),
            (GgmlType::Q4_1, 32, 20),
            (GgmlType::Q5_0, 32, 22),
            (GgmlType::Q5_1, 32, 24),
            (GgmlType::Q2_K, 256, 84),
            (GgmlType::Q3_K, 256, 110),
            (GgmlType::Q4_K, 256, 144),
            (GgmlType::Q5_K, 256, 176),
            (GgmlType::Q6_K, 256, 210),
        ];
        for (ty, block, bytes) in expected {
            assert_eq!(
                (ty.block_size(), ty.block_bytes()),
                (block, bytes),
                "{ty:?}"
            );
            assert_eq!(GgmlType::from_id(ty.id()), Ok(ty));
            assert_eq!(GgmlType::from_name(&ty.name().to_lowercase()), Some(ty));
        }
        assert!(GgmlType::from_id(16).unwrap_err().contains("IQ2_XXS"));
        assert!(GgmlType::from_id(999).unwrap_err().contains("unknown"));
        assert_eq!(GgmlType::Q8_0.bytes_for(33), None);
    }

    #[test]
    fn q4_0_block_by_hand() {
        // d = 0.5: nibble n decodes to (n - 8) / 2.
        let mut block = f16::from_f32(0.5).to_le_bytes().to_vec();
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let values = dequantize(GgmlType::Q4_0, &block);
        assert_eq!(values[0], -4.0);
        assert_eq!(values[15], 3.5);
        assert_eq!(values[16], 3.5);
        assert_eq!(values[31], -4.0);
    }
}
