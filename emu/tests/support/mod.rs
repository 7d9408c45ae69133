//! Helpers for the check tests: hand-written PTX entry points in a module whose
//! `.loc` lines point into a `.cu` file, and assertions on the reports.
#![allow(dead_code)]

use pimoe_emu::{FaultKind, KernelError, LaunchError, Stats};

/// The source file every test kernel's `.loc 1 N 0` names; reports shorten it to
/// `kernels/checks.cu:N`.
pub const CU: &str = "kernels/checks.cu";

/// A module of entry points (and `.func`s), with `.file 1` after them as nvcc puts it.
pub fn module(parts: &[String]) -> String {
    format!(
        ".version 9.0\n.target sm_90\n.address_size 64\n\n{}\n\t.file\t1 \"/src/pimoe/{CU}\"\n",
        parts.join("\n")
    )
}

/// An entry point `name` taking `.u64`/`.u32` parameters `p0, p1, ...` (types from
/// `params`), with a generous set of registers declared before `body`.
pub fn entry(name: &str, params: &[&str], body: &str) -> String {
    let ps: Vec<String> = params.iter().enumerate().map(|(k, t)| format!("\t.param {t} p{k}")).collect();
    format!(
        ".visible .entry {name}(\n{}\n)\n{{\n\t.reg .pred %p<16>;\n\t.reg .b32 %r<64>;\n\t.reg .b64 %rd<32>;\n\t.reg .f32 %f<32>;\n{body}\n}}\n",
        ps.join(",\n")
    )
}

/// The 1-based line of `src` holding `marker` (put in a `//` comment after the
/// instruction a report must name). Markers are unique per module.
pub fn line_of(src: &str, marker: &str) -> u32 {
    let hits: Vec<usize> =
        src.lines().enumerate().filter(|(_, l)| l.contains(marker)).map(|(i, _)| i).collect();
    assert_eq!(hits.len(), 1, "marker {marker} must occur once");
    hits[0] as u32 + 1
}

/// The kernel fault of a launch that must have faulted.
pub fn fault(r: Result<Stats, LaunchError>) -> KernelError {
    match r {
        Err(LaunchError::Kernel(k)) => k,
        Err(LaunchError::Config(c)) => panic!("expected a kernel fault, got a configuration error: {c}"),
        Ok(_) => panic!("expected a kernel fault, the launch ran clean"),
    }
}

/// A configuration error of a launch that must have been refused.
pub fn config(r: Result<Stats, LaunchError>) -> String {
    match r {
        Err(LaunchError::Config(c)) => c,
        Err(LaunchError::Kernel(k)) => panic!("expected a configuration error, got a fault: {k}"),
        Ok(_) => panic!("expected a configuration error, the launch ran"),
    }
}

/// Asserts the report's kind and that its text names each of `needles`.
pub fn assert_report(e: &KernelError, kind: FaultKind, needles: &[&str]) {
    let text = e.to_string();
    assert_eq!(e.kind, kind, "wrong kind in: {text}");
    for n in needles {
        assert!(text.contains(n), "report does not name `{n}`:\n{text}");
    }
}

/// Asserts the place of a report: kernel, block, thread, PTX line and `.cu` line.
pub fn assert_place(
    e: &KernelError,
    kernel: &str,
    block: [u32; 3],
    thread: [u32; 3],
    ptx_line: u32,
    cu_line: u32,
) {
    let text = e.to_string();
    assert_eq!(e.kernel, kernel, "{text}");
    assert_eq!(e.block, block, "{text}");
    assert_eq!(e.thread, Some(thread), "{text}");
    assert_eq!(e.ptx_line, ptx_line, "{text}");
    let cu = format!("{CU}:{cu_line}");
    assert_eq!(e.source.as_deref(), Some(cu.as_str()), "{text}");
    for n in [
        kernel.to_string(),
        format!("block ({},{},{})", block[0], block[1], block[2]),
        format!("thread ({},{},{})", thread[0], thread[1], thread[2]),
        format!("PTX line {ptx_line}"),
        cu,
    ] {
        assert!(text.contains(&n), "report does not name `{n}`:\n{text}");
    }
}

pub fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
}

pub fn bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `%r1` = tid.x, `%rd1` = p0 (global), `%rd3` = &p0[tid] (u32 elements).
pub const PROLOGUE: &str = "\
\t.loc 1 10 0
\tld.param.u64 %rd1, [p0];
\tcvta.to.global.u64 %rd1, %rd1;
\tmov.u32 %r1, %tid.x;
\tmul.wide.u32 %rd2, %r1, 4;
\tadd.s64 %rd3, %rd1, %rd2;";
