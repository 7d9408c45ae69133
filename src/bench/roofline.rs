//! What a kernel's counts would cost on a Hopper GPU: the rates of the two devices we
//! estimate for, the occupancy a kernel's resources allow on sm_90, and a roofline
//! time per kernel. Every figure here is a model, labelled as one in reports.

use serde::Serialize;

/// The rates an estimate uses, each with where it comes from.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceModel {
    pub name: &'static str,
    /// DRAM bytes per second the estimate uses (a measured copy rate where we have one).
    pub memory_bytes_per_s: f64,
    pub memory_source: &'static str,
    /// Dense bf16 tensor-core FLOP/s the estimate uses.
    pub mma_flop_per_s: f64,
    pub mma_source: &'static str,
    /// Cost of each node inside a graph beyond its roofline time: for a kernel the
    /// dependent launch, the ramp-up and the tail of its grid; a memset or copy node
    /// is charged the same.
    pub per_kernel_s: f64,
    /// Cost of launching the graph (or an eager kernel) from the host.
    pub per_launch_s: f64,
    pub overhead_source: &'static str,
}

const OVERHEAD: &str = "assumed, not measured: 1 us per node in a CUDA graph (a kernel's dependent \
                        launch, ramp-up and tail; a memset or copy node alike), 4 us per host \
                        launch; the first GPU run calibrates both (bench/gpu/run.sh ncu)";

pub fn h100() -> DeviceModel {
    DeviceModel {
        name: "H100 SXM (estimate)",
        memory_bytes_per_s: 3.0e12,
        memory_source: "~3.0 TB/s device copy rate measured on H100 SXM (spec 3.35 TB/s HBM3)",
        mma_flop_per_s: 800e12,
        mma_source: "~800 TFLOP/s bf16 measured by cuBLAS at 8192^3 on H100 SXM (spec 989 dense)",
        per_kernel_s: 1e-6,
        per_launch_s: 4e-6,
        overhead_source: OVERHEAD,
    }
}

pub fn h200() -> DeviceModel {
    DeviceModel {
        name: "H200 (estimate)",
        memory_bytes_per_s: 4.3e12,
        memory_source:
            "4.8 TB/s HBM3e spec x 0.9, the copy-to-spec ratio of the H100 (not measured on an H200)",
        mma_flop_per_s: 800e12,
        mma_source: "the H100's ~800 TFLOP/s: the same GH100 tensor cores and clocks (spec 989 dense)",
        per_kernel_s: 1e-6,
        per_launch_s: 4e-6,
        overhead_source: OVERHEAD,
    }
}

impl DeviceModel {
    /// A kernel's roofline time: its DRAM bytes or its tensor-core FLOPs at the
    /// device's rates, whichever is longer.
    pub fn roofline_s(&self, dram_bytes: f64, mma_flop: f64) -> f64 {
        (dram_bytes / self.memory_bytes_per_s).max(mma_flop / self.mma_flop_per_s)
    }
}

/// sm_90 limits, from the CUDA occupancy calculator's table for compute capability 9.0.
const WARPS_PER_SM: u32 = 64;
const BLOCKS_PER_SM: u32 = 32;
const REGS_PER_SM: u32 = 65_536;
const REG_UNIT: u32 = 256;
const SMEM_PER_SM: u32 = 233_472;
const SMEM_UNIT: u32 = 128;
const SMEM_RESERVED_PER_BLOCK: u32 = 1024;

/// Resident warps per SM over the maximum (64) for a block of `threads` threads using
/// `regs` registers per thread and `smem` bytes of shared memory.
pub fn occupancy(threads: u32, regs: u32, smem: u32) -> f64 {
    let warps = threads.div_ceil(32).max(1);
    let regs_per_warp = (regs.max(1) * 32).div_ceil(REG_UNIT) * REG_UNIT;
    let by_regs = REGS_PER_SM / (regs_per_warp * warps);
    let by_smem = SMEM_PER_SM / (smem.div_ceil(SMEM_UNIT) * SMEM_UNIT + SMEM_RESERVED_PER_BLOCK);
    let blocks = BLOCKS_PER_SM.min(WARPS_PER_SM / warps).min(by_regs).min(by_smem);
    (blocks * warps) as f64 / WARPS_PER_SM as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_follows_the_limiting_resource() {
        // 256 threads, 32 registers, no shared memory: 8 blocks of 8 warps fill 64.
        assert_eq!(occupancy(256, 32, 0), 1.0);
        // 128 registers: 4096 per warp, 16 warps per SM.
        assert_eq!(occupancy(128, 128, 0), 0.25);
        // 100 KiB of shared memory per block: 2 blocks of 4 warps.
        assert_eq!(occupancy(128, 32, 100 * 1024), 0.125);
        // 32 threads: 32 blocks at most, half the warps.
        assert_eq!(occupancy(32, 16, 0), 0.5);
    }

    #[test]
    fn roofline_is_the_longer_of_bytes_and_flops() {
        let d = h100();
        assert_eq!(d.roofline_s(3.0e12, 0.0), 1.0);
        assert_eq!(d.roofline_s(0.0, 1.6e15), 2.0);
    }
}
