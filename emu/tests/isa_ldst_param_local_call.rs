//! Data movement, parameters, calls, scopes and atomics (PTX ISA §9.7.9.8 ld,
//! §9.7.9.10 st, §5.1.6 .param state space, §9.7.11.4 call, §9.7.13.4 atom,
//! §4.5 / §11 scopes).
//!
//! ISA facts relied on:
//! - ld: "d = a; // named variable a" / "d = *(&a+immOff)"; vectors .v2/.v4 load
//!   consecutive elements; "For signed loads of sub-word sizes into a wider register,
//!   the value is sign-extended to the register width" (ld: destination register
//!   wider than the type, Operand Size Exceeding Instruction-Type Size).
//! - Kernel parameters are addressable: "mov.u64 %rd, kparam; ld.param ... [%rd]"
//!   (the address of a kernel .param variable may be taken with mov).
//! - call: "call{.uni} (ret-param), func, (param-list);" copies arguments into the
//!   callee's .param variables and back from its return parameter.
//! - "{ }" open a scope: a .reg declared inside shadows an outer one of that name.
//! - atom: "atomically loads the original value at location a into destination
//!   register d, performs a reduction operation with operand b and the value in
//!   location a, and stores the result"; cas: "*a = (*a == b) ? c : *a".

mod common;
use common::*;
use pimoe_emu::session::Arg;

/// Launches `k` of `ptx` with each buffer uploaded (in order, as u64 arguments) and
/// returns the buffers' contents afterwards.
fn launch(ptx: &str, grid: u32, block: u32, bufs: &[Vec<u8>], extra: &[Arg]) -> Vec<Vec<u8>> {
    let s = load(ptx);
    let ptrs: Vec<u64> = bufs.iter().map(|b| s.upload(b)).collect();
    let mut args: Vec<Arg> = ptrs.iter().map(|&p| Arg::U64(p)).collect();
    args.extend_from_slice(extra);
    s.launch("k", [grid, 1, 1], [block, 1, 1], 0, &args).unwrap_or_else(|e| panic!("launch: {e}\n{ptx}"));
    ptrs.iter().zip(bufs).map(|(&p, b)| s.download(p, b.len())).collect()
}

fn words(b: &[u8]) -> Vec<u32> {
    b.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn dwords(b: &[u8]) -> Vec<u64> {
    b.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn vector_loads_and_stores_in_every_space() {
    // Each thread copies 16 bytes global -> shared -> local -> global with .v4.u32,
    // then 16 more as .v2.u64 and .v4.f32 / .v2.f64, checking element order.
    let ptx = format!(
        "{HEADER}
.visible .entry k(.param .u64 k_in, .param .u64 k_out)
{{
    .reg .b64 %rd<8>;
    .reg .b32 %r<12>;
    .reg .f64 %fd<2>;
    .local .align 16 .b8 loc[32];
    .shared .align 16 .b8 sh[2048];
    ld.param.u64 %rd0, [k_in];
    ld.param.u64 %rd1, [k_out];
    mov.u32 %r0, %tid.x;
    mul.wide.u32 %rd2, %r0, 32;
    add.s64 %rd3, %rd0, %rd2;
    add.s64 %rd4, %rd1, %rd2;
    mov.u64 %rd5, sh;
    add.s64 %rd5, %rd5, %rd2;
    ld.global.v4.u32 {{%r1, %r2, %r3, %r4}}, [%rd3];
    st.shared.v4.u32 [%rd5], {{%r1, %r2, %r3, %r4}};
    ld.shared.v2.u32 {{%r5, %r6}}, [%rd5+8];
    ld.shared.v2.u32 {{%r7, %r8}}, [%rd5];
    st.local.v4.u32 [loc], {{%r5, %r6, %r7, %r8}};
    ld.local.v4.f32 {{%r1, %r2, %r3, %r4}}, [loc];
    st.global.v4.f32 [%rd4], {{%r4, %r3, %r2, %r1}};
    ld.global.v2.f64 {{%fd0, %fd1}}, [%rd3+16];
    st.local.v2.f64 [loc+16], {{%fd1, %fd0}};
    ld.local.v2.u64 {{%rd6, %rd7}}, [loc+16];
    st.global.v2.u64 [%rd4+16], {{%rd6, %rd7}};
    ret;
}}
"
    );
    let n = 40usize;
    let input: Vec<u8> = (0..n * 32).map(|i| (i * 7 + 3) as u8).collect();
    let out = launch(&ptx, 1, n as u32, &[input.clone(), vec![0; n * 32]], &[]);
    let (iw, ow) = (words(&input), words(&out[1]));
    let (id, od) = (dwords(&input), dwords(&out[1]));
    for t in 0..n {
        let i = &iw[t * 8..t * 8 + 4];
        // loc = [i2, i3, i0, i1]; stored reversed: [i1, i0, i3, i2].
        assert_eq!(ow[t * 8..t * 8 + 4], [i[1], i[0], i[3], i[2]], "thread {t}");
        assert_eq!(od[t * 4 + 2..t * 4 + 4], [id[t * 4 + 3], id[t * 4 + 2]], "thread {t}");
    }
}

#[test]
fn sub_word_loads_extend() {
    // Bytes 0x80, 0x7f, 0xff, 0x01 and halves 0x8001, 0x7ffe.
    let data = vec![0x80u8, 0x7f, 0xff, 0x01, 0x01, 0x80, 0xfe, 0x7f];
    let ptx = format!(
        "{HEADER}
.visible .entry k(.param .u64 k_in, .param .u64 k_out)
{{
    .reg .b64 %rd<4>;
    .reg .b32 %r<4>;
    .reg .b16 %h<2>;
    ld.param.u64 %rd0, [k_in];
    ld.param.u64 %rd1, [k_out];
    ld.global.s8 %r0, [%rd0];
    st.global.u32 [%rd1], %r0;
    ld.global.u8 %r1, [%rd0];
    st.global.u32 [%rd1+4], %r1;
    ld.global.s8 %r2, [%rd0+1];
    st.global.u32 [%rd1+8], %r2;
    ld.global.s16 %r3, [%rd0+4];
    st.global.u32 [%rd1+12], %r3;
    ld.global.u16 %r3, [%rd0+4];
    st.global.u32 [%rd1+16], %r3;
    ld.global.s16 %rd2, [%rd0+4];
    st.global.u64 [%rd1+24], %rd2;
    ld.global.s8 %rd3, [%rd0+2];
    st.global.u64 [%rd1+32], %rd3;
    ld.global.s8 %h0, [%rd0];
    st.global.u16 [%rd1+40], %h0;
    ld.global.s16 %h1, [%rd0+6];
    st.global.u16 [%rd1+42], %h1;
    ret;
}}
"
    );
    let out = launch(&ptx, 1, 1, &[data, vec![0; 48]], &[]);
    let w = words(&out[1]);
    assert_eq!(w[..5], [0xffff_ff80, 0x80, 0x7f, 0xffff_8001, 0x8001]);
    let d = dwords(&out[1]);
    assert_eq!(d[3..5], [0xffff_ffff_ffff_8001, u64::MAX]);
    assert_eq!(&out[1][40..44], &[0x80, 0xff, 0xfe, 0x7f]);
}

#[test]
fn kernel_parameters_by_value_and_by_address() {
    // k(out, u32 a, struct { u64 x; f32 y; u16 z; } s, f32 f, f64 g): the struct is
    // a .b8 array param; f is read through its address taken with mov.
    let ptx = format!(
        "{HEADER}
.visible .entry k(.param .u64 k_out, .param .u32 k_a, .param .align 8 .b8 k_s[16], .param .f32 k_f, .param .f64 k_g)
{{
    .reg .b64 %rd<6>;
    .reg .b32 %r<6>;
    .reg .b16 %h0;
    .reg .f64 %fd0;
    ld.param.u64 %rd0, [k_out];
    ld.param.u32 %r0, [k_a];
    st.global.u32 [%rd0], %r0;
    ld.param.u64 %rd1, [k_s];
    st.global.u64 [%rd0+8], %rd1;
    ld.param.f32 %r1, [k_s+8];
    st.global.f32 [%rd0+16], %r1;
    ld.param.u16 %h0, [k_s+12];
    st.global.u16 [%rd0+20], %h0;
    mov.b64 %rd2, k_f;
    ld.param.f32 %r2, [%rd2];
    st.global.f32 [%rd0+24], %r2;
    mov.u64 %rd3, k_s;
    ld.param.v2.u32 {{%r3, %r4}}, [%rd3];
    st.global.v2.u32 [%rd0+32], {{%r3, %r4}};
    ld.param.f64 %fd0, [k_g];
    st.global.f64 [%rd0+40], %fd0;
    ret;
}}
"
    );
    let mut st = Vec::new();
    st.extend_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
    st.extend_from_slice(&2.5f32.to_le_bytes());
    st.extend_from_slice(&0xbeefu16.to_le_bytes());
    st.extend_from_slice(&[0, 0]);
    let out = launch(
        &ptx,
        1,
        1,
        &[vec![0; 48]],
        &[Arg::U32(0xdead_beef), Arg::Bytes(st), Arg::F32(-1.25), Arg::F64(std::f64::consts::E)],
    );
    let o = &out[0];
    assert_eq!(words(&o[0..4]), [0xdead_beef]);
    assert_eq!(dwords(&o[8..16]), [0x1122_3344_5566_7788]);
    assert_eq!(f32::from_le_bytes(o[16..20].try_into().unwrap()), 2.5);
    assert_eq!(u16::from_le_bytes(o[20..22].try_into().unwrap()), 0xbeef);
    assert_eq!(f32::from_le_bytes(o[24..28].try_into().unwrap()), -1.25);
    assert_eq!(words(&o[32..40]), [0x5566_7788, 0x1122_3344]);
    assert_eq!(f64::from_le_bytes(o[40..48].try_into().unwrap()), std::f64::consts::E);
}

#[test]
fn call_with_param_arguments_and_return_value() {
    // addmul(a, b) = a * b + inner(a); inner(x) = x + 1000. Callees reuse the
    // caller's register names; the caller's registers must survive the call.
    let ptx = format!(
        "{HEADER}
.func (.param .b32 inner_ret) inner(.param .b32 inner_p0)
{{
    .reg .b32 %r<3>;
    ld.param.b32 %r1, [inner_p0];
    add.s32 %r2, %r1, 1000;
    st.param.b32 [inner_ret], %r2;
    ret;
}}
.func (.param .b32 func_retval0) addmul(.param .b32 addmul_param_0, .param .align 4 .b8 addmul_param_1[8])
{{
    .reg .b32 %r<6>;
    ld.param.b32 %r1, [addmul_param_0];
    ld.param.b32 %r2, [addmul_param_1+4];
    mul.lo.s32 %r3, %r1, %r2;
    {{
    .param .b32 param0;
    st.param.b32 [param0], %r1;
    .param .b32 retval0;
    call.uni (retval0), inner, (param0);
    ld.param.b32 %r4, [retval0];
    }}
    add.s32 %r5, %r3, %r4;
    st.param.b32 [func_retval0], %r5;
    ret;
}}
.visible .entry k(.param .u64 k_out)
{{
    .reg .b64 %rd<3>;
    .reg .b32 %r<6>;
    .reg .pred %p0;
    ld.param.u64 %rd0, [k_out];
    mov.u32 %r1, %tid.x;
    add.u32 %r2, %r1, 3;
    setp.lt.u32 %p0, %r1, 16;
    @%p0 bra $Lodd;
    add.u32 %r2, %r2, 100;
$Lodd:
    {{
    .param .b32 param0;
    st.param.b32 [param0], %r1;
    .param .align 4 .b8 param1[8];
    st.param.b32 [param1], 77;
    st.param.b32 [param1+4], %r2;
    .param .b32 retval0;
    call.uni (retval0), addmul, (param0, param1);
    ld.param.b32 %r3, [retval0];
    }}
    mul.wide.u32 %rd1, %r1, 12;
    add.s64 %rd2, %rd0, %rd1;
    st.global.u32 [%rd2], %r3;
    st.global.u32 [%rd2+4], %r1;
    st.global.u32 [%rd2+8], %r2;
    ret;
}}
"
    );
    let out = launch(&ptx, 1, 48, &[vec![0; 48 * 12]], &[]);
    let w = words(&out[0]);
    for t in 0..48u32 {
        let b = t + 3 + if t < 16 { 0 } else { 100 };
        assert_eq!(w[t as usize * 3..t as usize * 3 + 3], [t * b + t + 1000, t, b], "thread {t}");
    }
}

#[test]
fn nested_scopes_shadow_outer_registers() {
    let got = run_threads(
        32,
        3,
        "mov.u32 %r1, 5;
    {
    .reg .b32 %r1;
    mov.u32 %r1, 9;
    add.u32 %o1, %r1, %lane;
    {
    .reg .b32 %r1;
    mov.u32 %r1, 40;
    mov.u32 %o2, %r1;
    }
    add.u32 %o1, %o1, %r1;
    }
    add.u32 %o0, %r1, 0;",
        &[],
    );
    for (l, w) in got.iter().enumerate() {
        assert_eq!(w[..], [5, 18 + l as u32, 40], "lane {l}");
    }
    // A register declared in a closed scope is gone after it.
    refusal(&threads_module(1, "{ .reg .b32 %q; mov.u32 %q, 1; }\n    mov.u32 %o0, %q;"));
}

#[test]
fn global_atomics() {
    // 4 blocks of 64 threads on one buffer: [sum, count, min.s32, max.u32, f32 sum,
    // u64 sum], and per-thread words for exch and cas.
    let ptx = format!(
        "{HEADER}
.visible .entry k(.param .u64 k_acc, .param .u64 k_own, .param .u64 k_old)
{{
    .reg .b64 %rd<8>;
    .reg .b32 %r<12>;
    ld.param.u64 %rd0, [k_acc];
    ld.param.u64 %rd1, [k_own];
    ld.param.u64 %rd2, [k_old];
    mov.u32 %r0, %tid.x;
    mov.u32 %r1, %ctaid.x;
    mad.lo.u32 %r2, %r1, 64, %r0;
    atom.global.add.u32 %r3, [%rd0], %r2;
    atom.global.add.u32 %r4, [%rd0+4], 1;
    sub.s32 %r5, 100, %r2;
    atom.global.min.s32 %r6, [%rd0+8], %r5;
    mul.lo.u32 %r7, %r2, 2654435761;
    atom.global.max.u32 %r6, [%rd0+12], %r7;
    atom.global.add.f32 %r6, [%rd0+16], 0f3F000000;
    cvt.u64.u32 %rd3, %r2;
    shl.b64 %rd3, %rd3, 33;
    atom.global.add.u64 %rd4, [%rd0+24], %rd3;
    mul.wide.u32 %rd5, %r2, 4;
    add.s64 %rd6, %rd1, %rd5;
    add.u32 %r8, %r2, 1000;
    atom.global.exch.b32 %r9, [%rd6], %r8;
    atom.global.cas.b32 %r10, [%rd6], %r8, 7;
    atom.global.cas.b32 %r11, [%rd6], %r8, 9;
    add.s64 %rd7, %rd2, %rd5;
    mul.wide.u32 %rd5, %r2, 16;
    add.s64 %rd7, %rd2, %rd5;
    st.global.v4.u32 [%rd7], {{%r4, %r9, %r10, %r11}};
    ret;
}}
"
    );
    let n = 256u32;
    let own: Vec<u8> = (0..n).flat_map(|t| (t * 3).to_le_bytes()).collect();
    let mut acc = vec![0u8; 32];
    acc[8..12].copy_from_slice(&i32::MAX.to_le_bytes());
    let out = launch(&ptx, 4, 64, &[acc, own, vec![0; n as usize * 16]], &[]);
    let a = words(&out[0]);
    assert_eq!(a[0], (0..n).sum::<u32>());
    assert_eq!(a[1], n);
    assert_eq!(a[2] as i32, 100 - 255);
    assert_eq!(a[3], (0..n).map(|t| t.wrapping_mul(2654435761)).max().unwrap());
    assert_eq!(f32::from_bits(a[4]), n as f32 * 0.5);
    assert_eq!(
        dwords(&out[0][24..32])[0],
        (0..n as u64).map(|t| t << 33).fold(0u64, |s, x| s.wrapping_add(x))
    );
    let own = words(&out[1]);
    let old = words(&out[2]);
    let mut counts: Vec<u32> = (0..n as usize).map(|t| old[t * 4]).collect();
    counts.sort();
    // Each thread saw a distinct old count: 0..n.
    assert_eq!(counts, (0..n).collect::<Vec<_>>());
    for t in 0..n as usize {
        // exch returns the old word; the first cas matches (old 1000 + t, new 7),
        // the second does not (it sees 7) and leaves the word.
        assert_eq!(old[t * 4 + 1..t * 4 + 4], [t as u32 * 3, 1000 + t as u32, 7], "thread {t}");
        assert_eq!(own[t], 7, "thread {t}");
    }
}

#[test]
fn shared_atomics() {
    let ptx = format!(
        "{HEADER}
.visible .entry k(.param .u64 k_out)
{{
    .reg .b64 %rd<4>;
    .reg .b32 %r<8>;
    .reg .pred %p0;
    .shared .align 8 .b8 acc[16];
    ld.param.u64 %rd0, [k_out];
    mov.u32 %r0, %tid.x;
    setp.ne.u32 %p0, %r0, 0;
    @%p0 bra $Lwait;
    st.shared.u32 [acc], 0;
    st.shared.u32 [acc+4], -1;
    st.shared.u64 [acc+8], 0;
$Lwait:
    bar.sync 0;
    atom.shared.add.u32 %r1, [acc], 1;
    add.u32 %r2, %r0, 17;
    rem.u32 %r2, %r2, 50;
    add.u32 %r2, %r2, 3;
    atom.shared.min.u32 %r3, [acc+4], %r2;
    cvt.u64.u32 %rd1, %r0;
    atom.shared.add.u64 %rd2, [acc+8], %rd1;
    bar.sync 0;
    @%p0 bra $Ldone;
    ld.shared.u32 %r4, [acc];
    ld.shared.u32 %r5, [acc+4];
    ld.shared.u64 %rd3, [acc+8];
    st.global.u32 [%rd0], %r4;
    st.global.u32 [%rd0+4], %r5;
    st.global.u64 [%rd0+8], %rd3;
$Ldone:
    ret;
}}
"
    );
    let out = launch(&ptx, 2, 96, &[vec![0; 16]], &[]);
    let w = words(&out[0]);
    assert_eq!(w[0], 96);
    assert_eq!(w[1], 3);
    assert_eq!(dwords(&out[0][8..16])[0], (0..96).sum::<u64>());
}

/// membar / fence (PTX ISA §9.7.12.4): the last-block pattern across many blocks,
/// which the emulator runs on several host threads. Each block stores its value,
/// fences, and counts itself with atom.add; the block that sees count 63 fences and
/// adds the 64 stored values (loaded .cg, past L1) into out[1], and resets the count.
/// Every form of the instruction is accepted; the proxy form is refused.
#[test]
fn fences_order_a_last_block_reduction() {
    for fence in ["membar.gl", "fence.sc.gpu", "fence.acq_rel.gpu", "membar.sys", "fence.sc.sys"] {
        let ptx = format!(
            "{HEADER}
.visible .entry k(.param .u64 k_vals, .param .u64 k_out)
{{
    .reg .b64 %rd<8>;
    .reg .b32 %r<8>;
    .reg .pred %p<2>;
    ld.param.u64 %rd0, [k_vals];
    ld.param.u64 %rd1, [k_out];
    mov.u32 %r0, %ctaid.x;
    mul.wide.u32 %rd2, %r0, 4;
    add.s64 %rd3, %rd0, %rd2;
    add.u32 %r1, %r0, 1000;
    st.global.u32 [%rd3], %r1;
    {fence};
    atom.global.add.u32 %r2, [%rd1], 1;
    setp.ne.u32 %p0, %r2, 63;
    @%p0 bra DONE;
    {fence};
    mov.u32 %r3, 0;
    mov.u32 %r4, 0;
LOOP:
    mul.wide.u32 %rd4, %r3, 4;
    add.s64 %rd5, %rd0, %rd4;
    ld.global.cg.u32 %r5, [%rd5];
    add.u32 %r4, %r4, %r5;
    add.u32 %r3, %r3, 1;
    setp.lt.u32 %p1, %r3, 64;
    @%p1 bra LOOP;
    st.global.u32 [%rd1+4], %r4;
    st.global.u32 [%rd1], 0;
DONE:
    ret;
}}"
        );
        for _ in 0..20 {
            let out = launch(&ptx, 64, 1, &[vec![0u8; 256], vec![0u8; 8]], &[]);
            let want: u32 = (1000..1064).sum();
            assert_eq!(
                words(&out[1]),
                [0, want],
                "{fence}: count reset, then the sum of every block's value"
            );
        }
    }
    let proxy = format!("{HEADER}\n.visible .entry k()\n{{\n    fence.proxy.alias;\n    ret;\n}}");
    let err = refusal(&proxy).to_string();
    assert!(err.contains("fence.proxy.alias"), "the proxy fence is refused by name: {err}");
}
