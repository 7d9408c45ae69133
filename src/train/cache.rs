//! An on-disk cache of LLM features, one file per row, so that training again on
//! the same rows (other flags, more epochs, a few rows added) does not run the LLM
//! again. On a 2-core CPU the LLM runs at a few hundred tokens/s, so a few hundred
//! rows of 1,000 tokens cost about twenty minutes; the features of such a run take
//! H * 4 bytes per answer token (2.3 kB at SmolLM2's H = 576) or H * 8 bytes per
//! pooled row.
//!
//! Layout: `ROOT/<model fingerprint>/<row key>.bin`, raw little-endian values. The
//! model fingerprint hashes the model directory's config.json, tokenizer.json and
//! safetensors files, or the GGUF file (content, not dates); the row key hashes the feature kind and
//! the row's token ids. A file of the wrong size is ignored and rewritten; files are
//! written to a temporary name and renamed.

use std::fs::File;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use bytemuck::Pod;
use memmap2::Mmap;

use crate::bench::write_atomic;
use crate::error::{Error, Result};

/// FNV-1a over 64-bit words (https://www.ietf.org/archive/id/draft-eastlake-fnv-21.html):
/// small, stable across Rust releases, and fast enough to hash a model's weights.
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.0 = (self.0 ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(PRIME);
        }
        for &b in words.remainder() {
            self.0 = (self.0 ^ b as u64).wrapping_mul(PRIME);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Hashes the files that decide a model's features (a GGUF file is all of them).
pub fn fingerprint(model: &Path) -> Result<u64> {
    let mut names: Vec<PathBuf> = if model.is_file() {
        vec![model.to_path_buf()]
    } else {
        std::fs::read_dir(model)
            .map_err(|e| Error::io(model, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                n == "config.json" || n == "tokenizer.json" || n.ends_with(".safetensors")
            })
            .collect()
    };
    names.sort();
    let mut h = Fnv64::default();
    for path in &names {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only map of a file we only read; see WeightFile::open.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        h.write(path.file_name().expect("listed").as_encoded_bytes());
        h.write_u64(map.len() as u64);
        h.write(&map);
    }
    Ok(h.finish())
}

pub struct FeatureCache {
    dir: PathBuf,
}

impl FeatureCache {
    /// The cache for `model`'s features under `root`.
    pub fn open(root: &Path, model: &Path) -> Result<Self> {
        let dir = root.join(format!("{:016x}", fingerprint(model)?));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(FeatureCache { dir })
    }

    fn path(&self, key: u64) -> PathBuf {
        self.dir.join(format!("{key:016x}.bin"))
    }

    /// The `len` values stored under `key`, if a file of exactly that size is there.
    pub fn get<T: Pod>(&self, key: u64, len: usize) -> Option<Vec<T>> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        (bytes.len() == len * size_of::<T>()).then(|| bytemuck::pod_collect_to_vec(&bytes))
    }

    pub fn put<T: Pod>(&self, key: u64, values: &[T]) -> Result<()> {
        write_atomic(&self.path(key), bytemuck::cast_slice(values))
    }
}

/// The key of one row's features: what is computed (`kind`) from which tokens.
pub fn row_key(kind: &str, from: usize, tokens: &[u32]) -> u64 {
    let mut h = Fnv64::default();
    h.write(kind.as_bytes());
    h.write_u64(from as u64);
    h.write(bytemuck::cast_slice(tokens));
    h.finish()
}
