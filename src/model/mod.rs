//! Everything that reads or writes model files: config.json, safetensors, GGUF, tokenizer.

pub mod config;
pub mod fetch;
pub mod gguf;
pub mod gguf_model;
pub mod import;
pub mod quant;
pub mod safetensors;
pub mod tokenizer;

pub use config::{Arch, ModelConfig};
pub use safetensors::LoadOptions;

use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};

/// The config of the model at `path`: a directory's config.json, or a GGUF's metadata.
pub fn model_config(path: &Path) -> Result<ModelConfig> {
    if gguf_model::is_gguf(path) {
        Ok(gguf_model::GgufModel::open(path)?.config)
    } else {
        ModelConfig::load(&path.join("config.json"))
    }
}

/// A read-only map of `path`, refusing a directory by name (mapping one fails with
/// "No such device", which names nothing).
pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    if path.is_dir() {
        return Err(Error::format(path, "is a directory, not a file"));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only; a file modified underneath a running process is
    // outside what we can defend against, as for any mmap reader.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Says `bytes`, a slice of `map`, were copied out and will not be read again: the
/// map's pages wholly inside them leave the resident set. A loader that copies each
/// tensor then peaks near the weights' size, not twice it (the pages a copy was read
/// from stayed resident until the whole file was unmapped). The map is read-only and
/// backed by the file, so a page touched again is read back with the same bytes:
/// releasing costs a re-read at worst, never a changed value.
pub(crate) fn release_copied(map: &Mmap, bytes: &[u8]) {
    let Some(start) = (bytes.as_ptr() as usize).checked_sub(map.as_ptr() as usize) else { return };
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return,
    };
    let end = (start + bytes.len()).min(map.len()) / page * page;
    let start = start.div_ceil(page) * page;
    if end > start {
        // SAFETY: the range is inside the map; DONTNEED on a read-only file mapping
        // discards no data (see above). A failure only leaves the pages resident.
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Resident KiB of this process's mapping that starts at `addr` (/proc/self/smaps).
    fn resident_kib(addr: usize) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        let mut this = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(_)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                    this = a == addr;
                    continue;
                }
            }
            if this && first == "Rss:" {
                return line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("Rss in kB");
            }
        }
        panic!("no mapping at {addr:#x}");
    }

    #[test]
    fn released_pages_leave_the_resident_set_and_read_back_the_same() {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let path = std::env::temp_dir().join(format!("pimoe-release-copied-{}.bin", std::process::id()));
        let bytes: Vec<u8> = (0..64 * page).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let map = map_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap(); // the map keeps the file's pages
        assert!(map[..] == bytes[..]); // touches every page
        let addr = map.as_ptr() as usize;
        let full = resident_kib(addr);
        assert_eq!(full * 1024, 64 * page);
        // A slice that starts and ends inside pages: only the pages wholly inside
        // it (11..50) go; its first and last pages hold bytes of neighbours.
        release_copied(&map, &map[10 * page + 1..51 * page - 1]);
        assert_eq!((full - resident_kib(addr)) * 1024, 39 * page);
        assert!(map[..] == bytes[..], "released pages read back with their bytes");
        // A slice of something else, or an empty one, releases nothing.
        release_copied(&map, &bytes[..]);
        release_copied(&map, &map[5 * page..5 * page]);
        assert_eq!(resident_kib(addr) * 1024, 64 * page);
    }
}
