//! Every embedded PTX assembles for sm_90, and no kernel spills registers to local
//! memory: a spill on the decode path costs more than the kernel's arithmetic. Runs
//! wherever the build found nvcc (CI installs the pinned one), GPU or not.

use std::process::Command;

use pimoe::backend::kernels::{KERNELS, NVCC, PTX_ARCH};

#[test]
fn every_kernel_assembles_without_spills() {
    let Some(nvcc) = NVCC else {
        crate::common::skip(
            "every_kernel_assembles_without_spills: built without nvcc (run scripts/cuda-toolchain.sh)",
        );
        return;
    };
    let ptxas = std::path::Path::new(nvcc).with_file_name("ptxas");
    assert!(ptxas.is_file(), "no ptxas beside {nvcc}");
    assert!(!KERNELS.is_empty(), "no kernels embedded");
    let dir =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut report = Vec::new();
    for k in KERNELS {
        let ptx = k.ptx.unwrap_or_else(|| panic!("kernels/{}.cu has no PTX although nvcc was found", k.name));
        let path = dir.join(format!("{}.ptx", k.name));
        std::fs::write(&path, ptx).unwrap();
        let out = Command::new(&ptxas)
            .args(["-arch", PTX_ARCH.unwrap_or("sm_90"), "-v", "-o", "/dev/null"])
            .arg(&path)
            .output()
            .expect("run ptxas");
        let log = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ptxas rejected kernels/{}.cu:\n{log}", k.name);
        // ptxas -v prints, per entry: "Function properties for NAME" then
        // "N bytes stack frame, S bytes spill stores, L bytes spill loads".
        let mut entry = String::new();
        for line in log.lines() {
            if let Some(name) = line.split("Function properties for ").nth(1) {
                entry = name.trim().to_string();
            }
            if let Some(spill) = line.split(" bytes spill stores").next().and_then(|s| s.rsplit(", ").next())
            {
                if line.contains("spill stores") {
                    let bytes: u64 = spill.trim().parse().unwrap_or(u64::MAX);
                    report.push(format!("{}/{entry}: {bytes} bytes spilled", k.name));
                    assert_eq!(
                        bytes, 0,
                        "kernels/{}.cu: {entry} spills {bytes} bytes to local memory:\n{log}",
                        k.name
                    );
                }
            }
        }
    }
    assert!(!report.is_empty(), "ptxas -v printed no function properties");
    eprintln!("{} entry points checked, none spills", report.len());
    let _ = std::fs::remove_dir_all(&dir);
}
