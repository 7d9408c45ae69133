//! Paged KV cache: fixed-size blocks of token slots, handed out by a free-list
//! allocator (mechanism); which sequence gets blocks when is the scheduler's
//! business (policy).

use crate::backend::Backend;
use crate::error::{Error, Result};

/// Tokens per block. 16 keeps waste per sequence small and matches common paged
/// attention kernels.
pub const BLOCK_SIZE: usize = 16;

pub struct KvCache<B: Backend> {
    /// Per layer: (k, v), each (num_blocks * BLOCK_SIZE, kv_dim).
    pub layers: Vec<(B::Cache, B::Cache)>,
    pub num_blocks: usize,
    free: Vec<u32>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(backend: &B, num_layers: usize, kv_dim: usize, num_blocks: usize) -> Self {
        let len = num_blocks * BLOCK_SIZE * kv_dim;
        let layers = (0..num_layers).map(|_| (backend.cache(len), backend.cache(len))).collect();
        // Reversed so that blocks are handed out in ascending order.
        let free = (0..num_blocks as u32).rev().collect();
        KvCache { layers, num_blocks, free }
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Grows `table` so that it covers `len` tokens.
    pub fn reserve(&mut self, table: &mut Vec<u32>, len: usize) -> Result<()> {
        let need = len.div_ceil(BLOCK_SIZE);
        if need > table.len() && need - table.len() > self.free.len() {
            return Err(Error::Request(format!(
                "KV cache full: {len} tokens need {need} blocks, {} held and {} free of {}",
                table.len(),
                self.free.len(),
                self.num_blocks
            )));
        }
        while table.len() < need {
            table.push(self.free.pop().expect("checked above"));
        }
        Ok(())
    }

    /// Returns a finished sequence's blocks.
    pub fn release(&mut self, table: &mut Vec<u32>) {
        self.free.append(table);
    }
}
