#!/usr/bin/env python3
"""Puts the reference loop's timings (bench/reference/piern_loop.py) and pimoe's
(`pimoe bench-answers`) for the same answers side by side, checks that both did the
same work (per answer: prompt, generated and injected tokens, expert calls), and
writes one JSON with the latency ratio (reference / pimoe) per answer and overall.

Needs: Python 3 only.
Run:   python3 bench/reference/compare.py --reference LOOP.json [--reference LOOP2.json ...]
           --pimoe PIMOE.json [--gpu gpu.txt] --out RESULT.json
The first --reference is the headline (the reference as it runs, float32); others (for
instance the same loop in bfloat16) are reported beside it. --gpu is nvidia-smi's
`--query-gpu=name,driver_version,memory.total --format=csv` output.
"""

import argparse
import json
import os
import statistics
import sys
import time

COUNTS = ("prompt_tokens", "generated_tokens", "injected_tokens", "expert_calls")
GOAL = 20.0  # issue 6: at least 20x lower latency per answer


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def side_by_side(ref, ours):
    """Per-answer rows and the mismatches in work between the two runs."""
    rows, mismatches = [], []
    if len(ref["answers"]) != len(ours["answers"]):
        mismatches.append(f"{len(ref['answers'])} reference answers, {len(ours['answers'])} pimoe answers")
    for i, (r, o) in enumerate(zip(ref["answers"], ours["answers"])):
        for k in COUNTS:
            if r[k] != o[k]:
                mismatches.append(f"answer {i}: {k} {r[k]} (reference) vs {o[k]} (pimoe)")
        if r["stopped_at_end_of_turn"]:
            mismatches.append(f"answer {i}: the reference stopped at end-of-turn")
        if o["notes"]:
            mismatches.append(f"answer {i}: pimoe notes {o['notes']}")
        rows.append(
            {
                "prompt_index": r["prompt_index"],
                **{k: r[k] for k in COUNTS},
                "reference_s": r["latency_s"],
                "pimoe_s": o["latency_s"],
                "ratio": r["latency_s"] / o["latency_s"],
            }
        )
    return rows, mismatches


def summary(rows):
    ref = [r["reference_s"] for r in rows]
    ours = [r["pimoe_s"] for r in rows]
    return {
        "reference_median_s": statistics.median(ref),
        "pimoe_median_s": statistics.median(ours),
        "ratio_of_medians": statistics.median(ref) / statistics.median(ours),
        "ratio_of_totals": sum(ref) / sum(ours),
        "ratio_min": min(r["ratio"] for r in rows),
        "ratio_max": max(r["ratio"] for r in rows),
    }


def composition(path):
    """The shapes both systems ran, from the policy manifest the loop wrote."""
    try:
        m = load(os.path.join(path, "piern-loop.json"))
        base = os.path.dirname(os.path.join(path, "piern-loop.json"))
        cfg = load(os.path.join(base, m["llm"], "config.json"))
    except (OSError, KeyError, ValueError) as e:
        return {"unreadable": str(e)}
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size")
    e = m["experts"][0]
    return {
        "llm": {k: cfg.get(k) for k in keys},
        "t2c_backbone": "a second copy of the LLM's shapes",
        "router": {"vocab": m["router"].get("vocab"), "embed_dim": m["router"]["embed_dim"], "hidden": m["router"]["hidden"]},
        "deeponet": {"branch": e["expert"]["branch"], "trunk": e["expert"]["trunk"]},
        "policy": m["router"].get("policy"),
    }


def gpu_line(path):
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
        name, driver, memory = [x.strip() for x in lines[1].split(",")]
        return {"gpu": name, "driver": driver, "gpu_memory": memory}
    except (OSError, IndexError, ValueError) as e:
        return {"gpu_info_unreadable": str(e)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", action="append", required=True, help="piern_loop.py's JSON (first: headline)")
    p.add_argument("--pimoe", required=True, help="`pimoe bench-answers` JSON")
    p.add_argument("--gpu", help="nvidia-smi csv (name, driver, memory)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    ours = load(a.pimoe)
    runs = []
    for path in a.reference:
        ref = load(path)
        rows, mismatches = side_by_side(ref, ours)
        runs.append(
            {
                "reference_dtype": ref["dtype"],
                "same_work": not mismatches,
                "mismatches": mismatches,
                **summary(rows),
                "answers": rows,
            }
        )
    head, first = runs[0], load(a.reference[0])
    doc = {
        "bench": "piern-reference-loop-vs-pimoe",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": ours["commit"],
        "device": first["device"],
        **gpu_line(a.gpu),
        "pimoe_backend": ours["backend"],
        "reference": {k: first[k] for k in ("torch", "transformers", "max_new_tokens", "warmup")},
        "shapes": composition(first["composition"]),
        "goal": f"reference / pimoe latency per answer >= {GOAL}",
        # The goal is about the GPU; a CPU run is a smoke check of the pieces.
        "goal_met": head["same_work"] and head["ratio_of_medians"] >= GOAL if ours["backend"] == "cuda" else None,
        "runs": runs,
    }
    tmp = a.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, a.out)
    for r in runs:
        print(
            f"reference ({r['reference_dtype']}) {r['reference_median_s']:.3f} s vs pimoe {r['pimoe_median_s']:.3f} s "
            f"per answer (medians): {r['ratio_of_medians']:.1f}x; same work: {r['same_work']}"
        )
        for m in r["mismatches"]:
            print("  mismatch:", m)
    print(f"wrote {a.out}")
    return 0 if all(r["same_work"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
