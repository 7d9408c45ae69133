//! Every embedded PTX assembles for sm_90 (build.rs runs ptxas -v on each file and
//! fails the build otherwise), and no kernel spills registers to local memory: a
//! spill on the decode path costs more than the kernel's arithmetic. Runs wherever
//! the build found nvcc (CI installs the pinned one), GPU or not.

use pimoe::backend::kernels::{KERNELS, NVCC, RESOURCES};

#[test]
fn every_kernel_assembles_without_spills() {
    if NVCC.is_none() {
        crate::common::skip(
            "every_kernel_assembles_without_spills: built without nvcc (run scripts/cuda-toolchain.sh)",
        );
        return;
    }
    for k in KERNELS {
        let ptx = k.ptx.unwrap_or_else(|| panic!("kernels/{}.cu has no PTX although nvcc was found", k.name));
        let entries = ptx.lines().filter(|l| l.contains(".entry ")).count();
        let assembled = RESOURCES.iter().filter(|r| ptx.contains(&format!(".entry {}(", r.entry))).count();
        assert_eq!(
            assembled, entries,
            "kernels/{}.cu: ptxas reported {assembled} of its {entries} entry points",
            k.name
        );
    }
    for r in RESOURCES {
        // A stack frame alone is allowed: the f64 sin/cos slow path keeps a small
        // array there (rope_f32, power_flow_f64).
        assert!(r.spill_stores == 0 && r.spill_loads == 0, "{} spills to local memory: {r:?}", r.entry);
        assert!(r.registers > 0 && r.registers <= 255, "{r:?}");
    }
    eprintln!("{} entry points assembled, none spills", RESOURCES.len());
}
