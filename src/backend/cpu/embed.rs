//! Row gathers: the token embedding lookup, and picking the rows whose logits a
//! step needs before the lm_head.

use crate::backend::cpu::CpuWeight;
use crate::model::safetensors::HostData;

/// out (ids.len(), dim) = table[ids] ; table (vocab, dim)
pub fn embed(out: &mut [f32], table: &CpuWeight, ids: &[u32], dim: usize) {
    for (o, &id) in out.chunks_exact_mut(dim).zip(ids) {
        let r = id as usize * dim..(id as usize + 1) * dim;
        match &table.data {
            HostData::F32(t) => o.copy_from_slice(&t[r]),
            HostData::Bf16(t) => {
                for (oi, &b) in o.iter_mut().zip(&t[r]) {
                    *oi = f32::from_bits((b as u32) << 16);
                }
            }
            HostData::Quant(q) => {
                let (ty, bytes) = q.row(id as usize);
                crate::model::quant::dequantize(ty, bytes, o);
            }
        }
    }
}

/// out (rows.len(), dim) = x[rows] ; x (n, dim)
pub fn gather_rows(out: &mut [f32], x: &[f32], rows: &[u32], dim: usize) {
    for (o, &r) in out.chunks_exact_mut(dim).zip(rows) {
        o.copy_from_slice(&x[r as usize * dim..(r as usize + 1) * dim]);
    }
}
