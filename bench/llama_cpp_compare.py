#!/usr/bin/env python3
"""pimoe against llama.cpp (through llama-cpp-python) on the same GGUF file: teacher-
forced top-1 agreement and perplexity over a held text, and greedy generation on fixed
prompts (issue 16, item 4). Not part of the test suite; needs the venv that
scripts/llama-cpp.sh makes and a release build (`cargo build --release`).

    $(scripts/llama-cpp.sh) bench/llama_cpp_compare.py --gguf weights/.cache/SmolLM2-135M-Instruct.Q8_0.gguf \\
        --json bench/results/llama-cpp-compare-q8_0.json

The protocol, the same on both sides:
- ids: llama.cpp tokenizes the text (bench/reference/heldout.txt, no BOS, special-token
  strings as their ids, as pimoe's tokenizer does) and pimoe scores exactly those ids
  (`pimoe perplexity --ids`), so a tokenizer difference cannot enter.
- windows: consecutive runs of --ctx ids (the last may be shorter), each evaluated from
  a fresh KV cache (llama.cpp: n_ctx = n_batch = --ctx, logits_all); in a window of n
  ids, positions 1..n-1 are scored from the logits of the position before.
- per position: NLL = logsumexp(logits) - logit[target] in float64, and the argmax (the
  lowest id on a tie); perplexity = exp(mean NLL over all scored positions).
- agreement is also reported where llama.cpp's top two logits are more than 0.01, 0.1
  and 0.5 apart, and for llama.cpp against itself with an f32 instead of its default
  f16 KV cache: a change that only moves roundings, so the agreement any engine that is
  not bit-identical to llama.cpp can expect (on a quantized model every 8-bit activation
  rounding that moves is carried to the next layer, so on SmolLM2-135M this is ~95 %).
- greedy: `pimoe generate --temperature 0 --max-tokens N` against llama.cpp's argmax
  decode of the same prompt (raw text, no BOS, no chat template). A prompt counts only
  when llama.cpp's two largest logits differ by more than --tie at every one of its N
  steps (a near-tie can go either way on rounding); the others are reported with the
  step of their first near-tie and not counted. Text is compared (pimoe streams text);
  the prompt's token count is checked equal on both sides.
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

import llama_cpp_common as common

PROMPTS = [
    "The capital of France is",
    "Water boils at a temperature of",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are",
    "To make a cup of tea, first",
    "In 1969, the Apollo 11 mission",
    "A list of the planets in the solar system: Mercury,",
]


def windows(n: int, ctx: int) -> list:
    """(first, length) of each window with something to score; as pimoe's."""
    return [(s, min(ctx, n - s)) for s in range(0, n, ctx) if min(ctx, n - s) >= 2]


def score_rows(logits: np.ndarray, targets: np.ndarray):
    """NLL of each target, argmax and top-2 gap per row, in float64."""
    x = logits.astype(np.float64)
    m = x.max(axis=1)
    lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
    nll = lse - x[np.arange(len(targets)), targets]
    top2 = np.partition(x, -2, axis=1)[:, -2:]
    return nll, x.argmax(axis=1), top2[:, 1] - top2[:, 0]


# ggml_type's F32, for llama.cpp's KV cache (its default is F16).
GGML_TYPE_F32 = 0
# llama.cpp's top-2 logit gaps above which agreement is also reported.
GAPS = [0.01, 0.1, 0.5]


def agreement(a: np.ndarray, b: np.ndarray, gap: np.ndarray) -> dict:
    """Top-1 agreement of two engines, overall and where llama.cpp's top two logits
    are more than each of GAPS apart (a near-tie flips on rounding, a wide gap not)."""
    by_gap = []
    for g in GAPS:
        keep = gap > g
        by_gap.append({"gap_above": g, "positions": int(keep.sum()), "agreement": float((a == b)[keep].mean())})
    return {"top1_agreement": float((a == b).mean()), "by_llama_cpp_top2_gap": by_gap}


def llama_teacher_forced(llm, ids: list, ctx: int) -> dict:
    targets, nll, top1, margin = [], [], [], []
    t = time.perf_counter()
    for first, n in windows(len(ids), ctx):
        w = ids[first : first + n]
        llm.reset()  # n_tokens = 0: eval drops the whole KV cache first
        llm.eval(w)
        l, a, g = score_rows(np.asarray(llm.scores[: n - 1]), np.asarray(w[1:]))
        targets += w[1:]
        nll += l.tolist()
        top1 += a.tolist()
        margin += g.tolist()
    return {"seconds": time.perf_counter() - t, "targets": targets, "nll": nll, "top1": top1, "margin": margin}


def llama_greedy(llm, prompt_ids: list, n: int, stop: set) -> tuple:
    """n argmax tokens after the prompt (fewer at a stop token, included), and each
    step's top-2 gap."""
    llm.reset()
    llm.eval(prompt_ids)
    out, gaps = [], []
    for _ in range(n):
        row = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        top2 = np.partition(row, -2)[-2:]
        tok = int(row.argmax())
        out.append(tok)
        gaps.append(float(top2[1] - top2[0]))
        if tok in stop:
            break
        llm.eval([tok])
    return out, gaps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True, help="the GGUF file llama.cpp runs")
    ap.add_argument("--model", help="what pimoe loads (default: the same GGUF)")
    ap.add_argument("--text", default=common.HELD_TEXT)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--greedy-tokens", type=int, default=32)
    ap.add_argument("--tie", type=float, default=1e-3, help="top-2 logit gap below which a greedy step is a near-tie")
    ap.add_argument("--pimoe", default=common.PIMOE)
    ap.add_argument("--json")
    a = ap.parse_args()
    from llama_cpp import Llama

    model = a.model or a.gguf
    with open(a.text, encoding="utf-8") as fh:
        text = fh.read()
    llama_args = dict(
        model_path=a.gguf,
        n_ctx=a.ctx,
        n_batch=a.ctx,
        n_ubatch=a.ctx,
        logits_all=True,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        verbose=False,
    )
    llm = Llama(**llama_args)
    ids = llm.tokenize(text.encode(), add_bos=False, special=True)
    if len(ids) < 2:
        sys.exit(f"{a.text}: {len(ids)} tokens, nothing to score")
    report = {"bench": "pimoe-vs-llama.cpp", **common.provenance(a.threads, a.pimoe)}
    report.update(
        gguf=common.file_info(a.gguf),
        pimoe_model=os.path.relpath(model, common.ROOT),
        text={**common.file_info(a.text), "tokens": len(ids)},
        ctx=a.ctx,
        protocol=__doc__.split("The protocol, the same on both sides:\n")[1].strip(),
    )

    # pimoe on exactly these ids.
    with tempfile.TemporaryDirectory() as tmp:
        ids_path, out_path = os.path.join(tmp, "ids.json"), os.path.join(tmp, "ppl.json")
        with open(ids_path, "w") as fh:
            fh.write(str(ids))
        run = common.run_pimoe(
            a.pimoe,
            ["perplexity", "--model", model, "--ids", ids_path, "--ctx", str(a.ctx), "--json", out_path, "--device", "cpu"],
            a.threads,
        )
        ours = None
        if run["ok"]:
            with open(out_path) as fh:
                ours = json.load(fh)
    run.pop("stdout", None)
    theirs = llama_teacher_forced(llm, ids, a.ctx)
    # llama.cpp against itself with its KV cache in f32 instead of f16: a change that
    # only moves roundings, so its agreement is what any engine not bit-identical to
    # llama.cpp's default can expect on this model and text.
    llm_f32kv = Llama(**llama_args, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    itself = llama_teacher_forced(llm_f32kv, ids, a.ctx)
    del llm_f32kv
    margin = np.asarray(theirs["margin"])
    tf = {
        "targets_met": {"top1_agreement_min": 0.995, "perplexity_rel_diff_max": 0.005},
        "llama_cpp": {
            "scored": len(theirs["nll"]),
            "perplexity": float(np.exp(np.mean(theirs["nll"]))),
            "mean_nll": float(np.mean(theirs["nll"])),
            "seconds": theirs["seconds"],
        },
        "pimoe_run": run,
        "llama_cpp_f32_kv_vs_default": agreement(np.asarray(itself["top1"]), np.asarray(theirs["top1"]), margin),
    }
    if ours is not None:
        assert ours["targets"] == theirs["targets"], "the two sides scored different positions"
        a1, a2 = np.asarray(ours["top1"]), np.asarray(theirs["top1"])
        agree = a1 == a2
        d_nll = np.asarray(ours["nll"]) - np.asarray(theirs["nll"])
        rel = ours["perplexity"] / tf["llama_cpp"]["perplexity"] - 1.0
        tf.update(
            pimoe={k: ours[k] for k in ("scored", "perplexity", "mean_nll", "seconds", "device", "threads", "commit")},
            top1_agreement=float(agree.mean()),
            top1_disagreements=int((~agree).sum()),
            top1_by_llama_cpp_gap=agreement(a1, a2, margin)["by_llama_cpp_top2_gap"],
            perplexity_rel_diff=rel,
            nll_abs_diff_mean=float(np.abs(d_nll).mean()),
            nll_abs_diff_max=float(np.abs(d_nll).max()),
            # Where the two argmaxes differ, how close each engine's top two were: a
            # disagreement at a near-tie is rounding, one at a wide gap is a bug.
            disagreements=[
                {
                    "index": int(i),
                    "pimoe": int(a1[i]),
                    "llama_cpp": int(a2[i]),
                    "pimoe_top2_gap": ours["top1_margin"][i],
                    "llama_cpp_top2_gap": theirs["margin"][i],
                }
                for i in np.flatnonzero(~agree)[:100]
            ],
            passed=bool(agree.mean() >= 0.995 and abs(rel) <= 0.005),
        )
    report["teacher_forced"] = tf

    # Greedy generation on fixed prompts.
    stop = {t for t in (llm.token_eos(),) if t >= 0}
    for s in ("<|im_end|>", "<|endoftext|>"):
        t = llm.tokenize(s.encode(), add_bos=False, special=True)
        if len(t) == 1:
            stop.add(t[0])
    rows = []
    for prompt in PROMPTS:
        p_ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        gen, gaps = llama_greedy(llm, p_ids, a.greedy_tokens, stop)
        tie = next((i for i, g in enumerate(gaps) if g <= a.tie), None)
        run = common.run_pimoe(
            a.pimoe,
            ["generate", "--model", model, "--prompt", prompt, "--max-tokens", str(a.greedy_tokens),
             "--temperature", "0", "--device", "cpu"],
            a.threads,
        )
        want = llm.detokenize([t for t in gen if t not in stop]).decode("utf-8", errors="replace")
        got = run["stdout"][:-1] if run["ok"] and run["stdout"].endswith("\n") else run.get("stdout", "")
        m = re.search(r"prefill: (\d+) tokens", run.get("stderr_tail", ""))
        rows.append(
            {
                "prompt": prompt,
                "prompt_tokens": {"llama_cpp": len(p_ids), "pimoe": int(m.group(1)) if m else None},
                "llama_cpp_tokens": gen,
                "llama_cpp_text": want,
                "pimoe_text": got,
                "pimoe_error": run.get("error"),
                "min_top2_gap": min(gaps),
                "first_near_tie_step": tie,
                "counted": tie is None,
                "equal": run["ok"] and got == want and m is not None and int(m.group(1)) == len(p_ids),
            }
        )
    counted = [r for r in rows if r["counted"]]
    report["greedy"] = {
        "tokens": a.greedy_tokens,
        "tie": a.tie,
        "rule": "a prompt counts only if llama.cpp's top-2 logits differ by more than `tie` at every step; "
        "equal = same prompt token count and the same generated text",
        "counted": len(counted),
        "equal": sum(r["equal"] for r in counted),
        "passed": bool(counted) and all(r["equal"] for r in counted),
        "prompts": rows,
    }

    t = report["teacher_forced"]
    print(f"llama.cpp: perplexity {t['llama_cpp']['perplexity']:.4f} over {t['llama_cpp']['scored']} positions")
    if "pimoe" in t:
        print(
            f"pimoe:     perplexity {t['pimoe']['perplexity']:.4f} ({100 * t['perplexity_rel_diff']:+.3f} %), "
            f"top-1 agreement {100 * t['top1_agreement']:.2f} % ({t['top1_disagreements']} differ)"
        )
        print("           agreement where llama.cpp's top-2 gap is above " + ", ".join(
            f"{r['gap_above']}: {100 * r['agreement']:.2f} % of {r['positions']}" for r in t["top1_by_llama_cpp_gap"]))
    else:
        print(f"pimoe:     failed: {t['pimoe_run'].get('error')}")
    f = t["llama_cpp_f32_kv_vs_default"]
    print(f"llama.cpp with an f32 KV cache against its default: top-1 agreement {100 * f['top1_agreement']:.2f} %; "
          + ", ".join(f"gap > {r['gap_above']}: {100 * r['agreement']:.2f} %" for r in f["by_llama_cpp_top2_gap"]))
    g = report["greedy"]
    print(f"greedy {g['tokens']} tokens: {g['equal']}/{g['counted']} counted prompts equal ({len(PROMPTS)} prompts)")
    if a.json:
        common.write_json(a.json, report)


if __name__ == "__main__":
    main()
