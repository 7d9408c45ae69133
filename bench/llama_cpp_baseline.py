#!/usr/bin/env python3
"""Decode speed of llama.cpp (through llama-cpp-python) on SmolLM2-135M-Instruct: the
baseline for `pimoe bench` on the same machine, measured in the same session.

Not part of the test suite. Needs `pip install llama-cpp-python gguf numpy`
(llama-cpp-python compiles llama.cpp from source: about 12 minutes on 2 cores).

Measures the PyPI Q4_1 GGUF as shipped and the same weights widened to F32 (written
here with the gguf package), greedy at batch 1 on all cores, decoding the same number
of tokens after the same prompt as `pimoe bench`.

    python3 bench/llama_cpp_baseline.py --gguf weights/.cache/SmolLM2-135M-Instruct.Q4_1.gguf \
        --tokens 128 --repeats 5 --json bench/results/llama-cpp-decode-smollm2-135m.json
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import time

import gguf
import numpy as np
from gguf.quants import dequantize

PROMPT = "The capital of France is"


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


def decode_rates(path: str, tokens: int, repeats: int, threads: int) -> list:
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    rates = []
    for _ in range(repeats):
        llm.reset()
        gen = llm.generate(ids, temp=0.0, top_k=1, reset=True)
        next(gen)  # the prefill and the first token
        t = time.perf_counter()
        for _ in range(tokens):
            next(gen)
        rates.append(tokens / (time.perf_counter() - t))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    import llama_cpp

    f32 = os.path.splitext(a.gguf)[0] + ".F32.gguf"
    widen_to_f32(a.gguf, f32)
    threads = os.cpu_count()
    report = {
        "bench": "decode-baseline-llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "device": platform.processor() or platform.machine(),
        "threads": threads,
        "commit": subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prompt": PROMPT,
        "decode_tokens": a.tokens,
        "results": {},
    }
    for name, path in [("Q4_1", a.gguf), ("F32", f32)]:
        rates = decode_rates(path, a.tokens, a.repeats, threads)
        report["results"][name] = {
            "file_bytes": os.path.getsize(path),
            "decode_tok_per_s": statistics.median(rates),
            "decode_tok_per_s_each": rates,
        }
    text = json.dumps(report, indent=2)
    print(text)
    if a.json:
        with open(a.json + ".tmp", "w") as fh:
            fh.write(text + "\n")
        os.rename(a.json + ".tmp", a.json)


if __name__ == "__main__":
    main()
