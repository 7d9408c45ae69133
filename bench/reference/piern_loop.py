#!/usr/bin/env python3
"""The PiERN reference's inference loop, timed, as a peer of pimoe on the same
composition (issue 6: "the reference implementation's loop as a peer").

The reference (github.com/DREAMLAB-PKU/PiERN, code/capacity_sample_PiERN.py) answers one
battery question at a time with Hugging Face transformers. Written here from its
published behaviour (../shared/PIMOE.md), per answer, inside the timed span as there:
  - the prompt: the system message and the battery question in Qwen2.5's chat format
    (what its apply_chat_template renders), tokenized;
  - up to --max-new-tokens times: the whole sequence through the LLM (no KV cache,
    logits at every position, as a plain forward computes them), greedy next token,
    stop at end-of-turn; the router re-embeds every token after the prompt (injected
    ones too) and pools their mean from scratch; when it fires, the T2C module runs
    its own backbone over the whole sequence, its head gives 13 numbers, the DeepONet
    takes the first 11 and the last two swapped, and "{value:.6f}。结论：{conclusion}"
    is tokenized and appended;
  - the text decoded; then the clock stops after a CUDA synchronize.
Module classes (the reference's structure and state_dict names) come from
tests/fixtures/make_piern_reference.py; the weights from a converted composition
(weights/convert_piern.py's piern.json and files), loaded back into those classes in
--dtype (the reference's: float32, what its from_pretrained calls give under the
transformers 4 of its time; its DeepONet is always float32).

Same work in both systems. Random weights generate arbitrary text, so
`make_piern_reference.py --bench` arranges them (see its same_work_): end-of-turn never
wins, so every answer runs --max-new-tokens LLM tokens; the router's probability is
about 0.9997 for any tokens, so where it fires is set by the policy, which this loop
applies exactly as pimoe's router does (`--max-firings` per answer; `--refractory`
LLM tokens after an injected result without firing; threshold 0.5): with
`--max-firings 1` it fires after the first generated token, once; the DeepONet's output
is 0.9 plus about 1e-4, so every injection is the same number of tokens. The loop
writes `piern-loop.json` beside the composition's piern.json with that policy, and a
workload for `pimoe bench-answers`: the same prompts, each with a token budget of the
generated plus injected tokens counted here (pimoe's budget counts both; the
reference's counts LLM tokens only). bench/reference/compare.py then checks that the
counts agree before it reports a ratio.

Known differences, each of which can only make the reference faster than it is: its
slow Python tokenizer (use_fast=False) is replaced by the `tokenizers` one, its print
of the T2C outputs and its NVML energy reads are left out, and a --warmup answer runs
untimed first (its script times its first answer cold).

Needs: pip install torch transformers tokenizers safetensors   (a GPU for real numbers)
Run:   python3 bench/reference/piern_loop.py --composition DIR/converted \\
           --out loop.json --workload workload.json [--device cuda] [--dtype float32] \\
           [--answers 8] [--max-new-tokens 100] [--max-firings 1] [--refractory 0]
(bench/gpu/run.sh reference runs it; bench/NOTES.md has the whole procedure.)
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
from make_piern_reference import (  # noqa: E402
    DeepONet,
    LMClassifier1D,
    LMRegression13D,
    battery_prompts,
    chatml,
    result_text,
    write_json,
)

# A system message of about the reference's length (our wording; see tests/fixtures/piern/README.md).
with open(os.path.join(ROOT, "tests", "fixtures", "piern", "system_prompt.json"), encoding="utf-8") as _f:
    SYSTEM = json.load(_f)["system"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Policy:
    """pimoe's RouterPolicy (src/pimoe/router.rs) for one answer: after an injected
    result the next `refractory` decisions do not fire; at most `max_firings`
    firings; otherwise fire when the probability is > threshold."""

    def __init__(self, threshold, refractory, max_firings):
        self.threshold, self.refractory, self.max_firings = threshold, refractory, max_firings
        self.cooldown = self.firings = 0

    def fires(self, prob):
        if self.cooldown > 0:
            self.cooldown -= 1
            return False
        if self.max_firings is not None and self.firings >= self.max_firings:
            return False
        if prob > self.threshold:
            self.firings += 1
            self.cooldown = self.refractory
            return True
        return False


class Composition:
    """The reference's modules with the weights of a converted composition."""

    def __init__(self, manifest, device, dtype):
        from transformers import Qwen2ForCausalLM

        with open(manifest, encoding="utf-8") as f:
            m = json.load(f)
        base = os.path.dirname(os.path.abspath(manifest))
        self.manifest, self.doc = manifest, m
        llm_dir = os.path.join(base, m["llm"])
        self.tok = Tokenizer.from_file(os.path.join(llm_dir, "tokenizer.json"))
        self.eos = self.tok.token_to_id("<|im_end|>")

        def backbone(path):
            model = Qwen2ForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
            return model.to(device).eval()

        self.llm = backbone(llm_dir)
        r = m["router"]
        vocab = r.get("vocab") or self.tok.get_vocab_size(with_added_tokens=True)
        self.router = LMClassifier1D(vocab, r["embed_dim"], r["hidden"])
        self.router.load_state_dict(load_file(os.path.join(base, r["weights"])))
        self.router.to(device, dtype).eval()
        (e,) = m["experts"]
        t2c = e["t2c"]
        self.t2c = LMRegression13D(backbone(os.path.join(base, t2c["backbone"])), t2c["outputs"])
        head = load_file(os.path.join(base, t2c["weights"]))
        self.t2c.head.load_state_dict({k.removeprefix("head."): v for k, v in head.items()})
        self.t2c.head.to(device, dtype).eval()
        d = e["expert"]
        self.deeponet = DeepONet(d["branch"][0], d["trunk"][0], d["branch"][1:-1], d["trunk"][1:-1])
        self.deeponet.load_state_dict(deeponet_state(self.deeponet, load_file(os.path.join(base, d["weights"]))))
        self.deeponet.to(device, torch.float32).eval()

    def write_policy_manifest(self, policy):
        """piern.json with this run's policy, for pimoe (same folder, same relative paths)."""
        doc = json.loads(json.dumps(self.doc))
        doc["router"]["policy"] = {"threshold": policy.threshold, "refractory": policy.refractory}
        if policy.max_firings is not None:
            doc["router"]["policy"]["max_firings"] = policy.max_firings
        path = os.path.join(os.path.dirname(os.path.abspath(self.manifest)), "piern-loop.json")
        write_json(path, doc)
        return path


def deeponet_state(net, converted):
    """The converter's names (branch_net.layers.{2i}.*, float64 copies of float32
    weights) mapped back to the reference's Sequential indices (float32)."""
    state = {}
    for ours, theirs in (("branch_net", "n_branch_net"), ("trunk_net", "chunk_net")):
        linear = [i for i, mod in enumerate(getattr(net, theirs)) if isinstance(mod, torch.nn.Linear)]
        for k, idx in enumerate(linear):
            for p in ("weight", "bias"):
                state[f"{theirs}.{idx}.{p}"] = converted[f"{ours}.layers.{2 * k}.{p}"].float()
    # output_net is never used by the forward; keep the module's own.
    state.update({f"output_net.{k}": v for k, v in net.output_net.state_dict().items()})
    return state


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def answer(c, user, max_new_tokens, policy, device):
    """One answer as the reference produces it; returns its record (latency included)."""
    sync(device)
    t0 = time.perf_counter()
    ids = torch.tensor([c.tok.encode(chatml(SYSTEM, user), add_special_tokens=False).ids], device=device)
    n_prompt = ids.shape[1]
    generated, injected, firings, stopped, min_prob = 0, 0, [], False, 1.0
    for _ in range(max_new_tokens):
        nxt = torch.argmax(c.llm(input_ids=ids).logits[:, -1, :], dim=-1, keepdim=True)
        if nxt.item() == c.eos:
            stopped = True
            break
        ids = torch.cat([ids, nxt], dim=-1)
        generated += 1
        new = ids[:, n_prompt:]
        prob = torch.sigmoid(c.router(new, torch.ones_like(new))).item()
        min_prob = min(min_prob, prob)
        if not policy.fires(prob):
            continue
        x13 = c.t2c(ids, torch.ones_like(ids)).float()
        value = c.deeponet((x13[:, :11], x13[:, 11:][:, [1, 0]])).item()
        result = torch.tensor([c.tok.encode(result_text(value), add_special_tokens=False).ids], device=device)
        ids = torch.cat([ids, result], dim=-1)
        firings.append({"at": generated, "prob": prob, "value": value, "tokens": result.shape[1]})
        injected += result.shape[1]
    text = c.tok.decode(ids[0].tolist(), skip_special_tokens=True)
    sync(device)
    latency = time.perf_counter() - t0
    return {
        "prompt_tokens": n_prompt,
        "generated_tokens": generated,
        "injected_tokens": injected,
        "expert_calls": len(firings),
        "stopped_at_end_of_turn": stopped,
        "firings": firings,
        "min_router_prob": min_prob,
        "latency_s": latency,
        "chars": len(text),
    }


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.machine()
    return f"{model} ({torch.get_num_threads()} threads)"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--composition", required=True, help="a converted composition folder (its piern.json)")
    p.add_argument("--out", required=True, help="this loop's JSON report")
    p.add_argument("--workload", required=True, help="the prompts and budgets for `pimoe bench-answers`")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="LLM, T2C and router (the reference: float32)")
    p.add_argument("--answers", type=int, default=8, help="battery prompts, evenly spaced over the 2,400")
    p.add_argument("--max-new-tokens", type=int, default=100, help="LLM tokens per answer (the reference: 100)")
    p.add_argument("--max-firings", type=int, default=None, help="per answer (default: no limit, as the reference)")
    p.add_argument("--refractory", type=int, default=0, help="LLM tokens after a result without firing")
    p.add_argument("--warmup", type=int, default=1, help="untimed answers first (the first prompt)")
    a = p.parse_args()
    if a.answers < 1 or a.max_new_tokens < 1 or a.warmup < 0 or a.refractory < 0:
        p.error("--answers and --max-new-tokens must be positive, --warmup and --refractory not negative")
    device = torch.device(a.device)
    started = time.time()
    c = Composition(os.path.join(a.composition, "piern.json"), device, DTYPES[a.dtype])
    print(f"loaded in {time.time() - started:.1f} s", flush=True)
    prompts = battery_prompts()
    picked = [i * len(prompts) // a.answers for i in range(a.answers)]
    policy = lambda: Policy(0.5, a.refractory, a.max_firings)  # noqa: E731
    for _ in range(a.warmup):
        answer(c, prompts[picked[0]], a.max_new_tokens, policy(), device)
    records = []
    for n, i in enumerate(picked):
        r = {"prompt_index": i, **answer(c, prompts[i], a.max_new_tokens, policy(), device)}
        records.append(r)
        print(
            f"answer {n + 1}/{a.answers}: {r['latency_s']:.3f} s, {r['prompt_tokens']} prompt + "
            f"{r['generated_tokens']} generated + {r['injected_tokens']} injected tokens, {r['expert_calls']} firings",
            flush=True,
        )
    lat = [r["latency_s"] for r in records]
    manifest = c.write_policy_manifest(policy())
    import transformers

    write_json(
        a.out,
        {
            "bench": "piern-reference-loop",
            "device": device_name(device),
            "dtype": a.dtype,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "composition": os.path.abspath(a.composition),
            "policy": {"threshold": 0.5, "refractory": a.refractory, "max_firings": a.max_firings},
            "max_new_tokens": a.max_new_tokens,
            "warmup": a.warmup,
            "answers": records,
            "median_latency_s": statistics.median(lat),
            "mean_latency_s": statistics.fmean(lat),
        },
    )
    write_json(
        a.workload,
        {
            "warmup": a.warmup,
            "answers": [
                {
                    "prompt": chatml(SYSTEM, prompts[r["prompt_index"]]),
                    "max_tokens": r["generated_tokens"] + r["injected_tokens"],
                }
                for r in records
            ],
        },
    )
    print(f"median {statistics.median(lat):.3f} s per answer; wrote {a.out}, {a.workload} and {manifest}")


if __name__ == "__main__":
    main()
