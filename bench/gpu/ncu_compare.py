#!/usr/bin/env python3
"""Nsight Compute's hardware counters for one model step beside the PTX emulator's
counts for the same step (`pimoe profile-kernels --json`), kernel by kernel.

    python3 bench/gpu/ncu_compare.py --emulator bench/results/profile-decode-b1-ctx512.json \
        --ncu ncu.csv [--timing gpu-timing.json] --out ncu-vs-emulator.json

ncu.csv is `ncu --csv --page raw --metrics <METRICS below> pimoe profile-kernels
--device cuda ... --replays 0`: its last N kernels (N = the emulator's launches) are
the step the emulator counted. What should agree, and how closely:
  - DRAM bytes: the emulator's model (each sector once per launch) against
    dram__bytes; L2 hits across launches make the GPU's lower, write-back timing
    can move bytes between kernels.
  - L2 sectors (lts__t_sectors) against the emulator's sectors touched by the
    requests: equal where L1 misses everything (the streamed weights).
  - sectors per global request and shared-memory bank conflicts: the same
    definitions on both sides (l1tex counters), so they should match closely.
  - instructions: the emulator counts PTX, the GPU executes SASS (ptxas folds
    movs, unrolls differently), so only the ratio is reported.
  - occupancy: the emulator's is the theoretical one from ptxas's resources, ncu's
    the achieved one.
  - time: gpu__time_duration per kernel against the roofline of its bytes and
    FLOPs gives the overhead per launch that src/bench/roofline.rs assumes (1 us);
    with --timing, the step's wall time against the estimate.
Standard library only (the GPU machine has no network for pip).
"""
import argparse
import csv
import json
import sys
from collections import OrderedDict

METRICS = [
    "gpu__time_duration.sum",
    "dram__bytes_read.sum",
    "dram__bytes_write.sum",
    "lts__t_sectors.sum",
    "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum",
    "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum",
    "l1tex__t_requests_pipe_lsu_mem_global_op_st.sum",
    "l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
    "smsp__inst_executed.sum",
    "smsp__thread_inst_executed_per_inst_executed.ratio",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
]


def read_ncu(path):
    """The rows of ncu's raw CSV page, in launch order, skipping its log lines."""
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        sys.exit(f"{path}: no ncu CSV header (\"ID\", ...) found; was ncu run with --csv --page raw?")
    rows = list(csv.DictReader(lines[start:]))
    # The first row after the header holds the units.
    units = rows[0] if rows and not rows[0].get("ID", "").strip().isdigit() else None
    rows = [r for r in rows if r.get("ID", "").strip().isdigit()]
    return rows, units


def num(row, metric, units):
    v = row.get(metric, "")
    try:
        x = float(v.replace(",", ""))
    except ValueError:
        return 0.0
    unit = (units or {}).get(metric, "")
    scale = {"Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "usecond": 1e-6, "msecond": 1e-3,
             "nsecond": 1e-9, "second": 1.0, "byte": 1.0}
    return x * scale.get(unit, 1.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emulator", required=True)
    ap.add_argument("--ncu", required=True)
    ap.add_argument("--timing")
    ap.add_argument("--gpu", help="nvidia-smi's gpu.txt, to name the device")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    emu = json.load(open(a.emulator))
    rows, units = read_ncu(a.ncu)
    n = emu["kernel_launches"]
    if len(rows) < n:
        sys.exit(f"{a.ncu}: {len(rows)} kernels profiled, the emulator's step has {n}")
    step = rows[-n:]
    names = [r["Kernel Name"].split("(")[0].strip() for r in step]
    emu_names = sorted(k["kernel"] for k in emu["kernels"])
    if sorted(set(names)) != emu_names:
        sys.exit(f"the last {n} kernels ncu saw ({sorted(set(names))}) are not the emulator's ({emu_names})")

    per = OrderedDict()
    for name, r in zip(names, step):
        g = per.setdefault(name, {"launches": 0, "time_s": 0.0, "dram_bytes": 0.0, "requests": 0.0,
                                  "sectors": 0.0, "l2_sectors": 0.0, "bank_conflicts": 0.0, "sass_inst": 0.0,
                                  "thread_inst": 0.0, "occupancy_pct_sum": 0.0})
        g["launches"] += 1
        g["time_s"] += num(r, "gpu__time_duration.sum", units)
        g["dram_bytes"] += num(r, "dram__bytes_read.sum", units) + num(r, "dram__bytes_write.sum", units)
        g["requests"] += num(r, "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum", units) + num(
            r, "l1tex__t_requests_pipe_lsu_mem_global_op_st.sum", units)
        g["sectors"] += num(r, "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum", units) + num(
            r, "l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum", units)
        g["l2_sectors"] += num(r, "lts__t_sectors.sum", units)
        g["bank_conflicts"] += num(r, "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum", units) + num(
            r, "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum", units)
        inst = num(r, "smsp__inst_executed.sum", units)
        g["sass_inst"] += inst
        g["thread_inst"] += inst * num(r, "smsp__thread_inst_executed_per_inst_executed.ratio", units)
        g["occupancy_pct_sum"] += num(r, "sm__warps_active.avg.pct_of_peak_sustained_active", units)

    out_rows = []
    print(f"{'kernel':<28} {'runs':>4} {'DRAM MB emu/ncu':>17} {'sec/req emu/ncu':>16} "
          f"{'conflicts emu/ncu':>19} {'inst ptx/sass':>13} {'occ theo/ach':>12} {'us':>8} {'over us':>8}")
    for k in emu["kernels"]:
        g = per[k["kernel"]]
        ncu_spr = g["sectors"] / g["requests"] if g["requests"] else 0.0
        overhead = (g["time_s"] - k["h100_roofline_s"]) / g["launches"]
        row = {
            "kernel": k["kernel"], "launches": g["launches"],
            "dram_bytes_emulator": k["dram_bytes"], "dram_bytes_ncu": g["dram_bytes"],
            "sectors_per_request_emulator": k["sectors_per_request"], "sectors_per_request_ncu": ncu_spr,
            # The emulator's L1 sectors (every request's) against all L2 sectors: L1
            # hits lower the GPU's, L2 traffic of other units raises it.
            "sectors_emulator": k["bytes_in_sectors"] / 32, "l2_sectors_ncu": g["l2_sectors"],
            "bank_conflicts_emulator": k["bank_conflicts"], "bank_conflicts_ncu": g["bank_conflicts"],
            "ptx_instructions_emulator": k["warp_instructions"], "sass_instructions_ncu": g["sass_inst"],
            "lane_efficiency_emulator": k["lane_efficiency"],
            "lane_efficiency_ncu": g["thread_inst"] / (32 * g["sass_inst"]) if g["sass_inst"] else 0.0,
            "occupancy_theoretical_emulator": k["occupancy"],
            "occupancy_achieved_ncu": g["occupancy_pct_sum"] / g["launches"] / 100,
            "time_s_ncu": g["time_s"], "h100_roofline_s_emulator": k["h100_roofline_s"],
            "time_over_roofline_per_launch_s": overhead,
        }
        out_rows.append(row)
        print(f"{k['kernel']:<28} {g['launches']:>4} {k['dram_bytes']/1e6:>8.1f}/{g['dram_bytes']/1e6:<8.1f} "
              f"{k['sectors_per_request']:>7.1f}/{ncu_spr:<8.1f} {k['bank_conflicts']:>9.0f}/{g['bank_conflicts']:<9.0f} "
              f"{k['warp_instructions']/max(g['sass_inst'], 1):>13.2f} "
              f"{k['occupancy']:>5.2f}/{row['occupancy_achieved_ncu']:<6.2f} {g['time_s']*1e6:>8.1f} {overhead*1e6:>8.2f}")

    kernel_time = sum(g["time_s"] for g in per.values())
    roofline = sum(k["h100_roofline_s"] for k in emu["kernels"])
    result = {
        "bench": "ncu-vs-emulator",
        "emulator_json": a.emulator,
        "emulator_commit": emu.get("commit"),
        "device": open(a.gpu).read().strip() if a.gpu else None,
        "config": emu["config"],
        "kernel_launches": n,
        "sum_kernel_time_s_ncu": kernel_time,
        "sum_roofline_s_emulator": roofline,
        "mean_overhead_per_launch_s": (kernel_time - roofline) / n,
        "estimate_h100_s": emu["estimates"][0]["estimate_s"],
        "kernels": out_rows,
    }
    if a.timing:
        t = json.load(open(a.timing))
        result["step_wall_s_median"] = t["step_s_median"]
        result["date"] = t["date"]
        result["commit"] = t["commit"]
        print(f"step: {t['step_s_median']*1e6:.1f} us wall (median of {t['replays']}) against the emulator's "
              f"estimate {emu['estimates'][0]['estimate_s']*1e6:.1f} us; kernels alone {kernel_time*1e6:.1f} us "
              f"(ncu, serialised), roofline {roofline*1e6:.1f} us")
    print(f"mean time over roofline per launch: {result['mean_overhead_per_launch_s']*1e6:.2f} us "
          f"(the estimate assumes 1 us)")
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    if "--metrics" in sys.argv:
        print(",".join(METRICS))
        sys.exit(0)
    main()
