#!/usr/bin/env python3
"""Converts the PiERN reference's PyTorch checkpoints (github.com/DREAMLAB-PKU/PiERN,
the battery state-of-health task) into pimoe's safetensors files and two composition
manifests, so that the reference system runs on pimoe.

Needs: Python >= 3.10 and `pip install torch safetensors` (nothing else; no GPU).

What it reads, in the reference's own layout and names (its code/capacity_sample_PiERN.py
loads them from `../model/`):

  --checkpoints DIR   the reference's model folder, holding
      capacity_token_router.pt             the router: the state_dict of LMClassifier1D
          embedding.weight (V, E)          V = len(tokenizer) (151,665 for Qwen2.5), E = 1536
          fc.0.weight (128, E)  fc.0.bias (128)  fc.2.weight (1, 128)  fc.2.bias (1)
      capacity_test2computation_module.pt  T2C: the state_dict of LMRegression13D
          base_model.model.*, base_model.lm_head.weight   its fine-tuned Qwen2 backbone
          head.0.weight (128, H)  head.0.bias  head.2.weight (13, 128)  head.2.bias
      capacity_expert_model.pt             the DeepONet, saved whole (torch.save(module))
          n_branch_net.{0,3,5,8,11,14,17}.*  chunk_net.{0,3,6,9,12,15}.*  (Linear layers
          among ReLU and Dropout modules), output_net.0.* (not used by its forward)
  --router / --t2c / --deeponet FILE   each overrides one of those paths
  --base-model DIR    the base model in Hugging Face layout (Qwen2.5-0.5B-Instruct for the
                      reference): config.json, tokenizer.json, *.safetensors. It is the
                      reasoning LLM, and lends the T2C backbone its config and tokenizer.

A checkpoint that is a state_dict is read with torch.load(weights_only=True). The
DeepONet is a whole pickled module whose class lives in the reference's script, so it
is unpickled with weights_only=False, unknown classes standing in as plain modules:
pickles can run code, so convert only files you trust.

What it writes, all into OUT (made next to it under a temporary name, then renamed):

  router.safetensors    embedding.weight, fc.0.*, fc.2.* as stored (float32)
  t2c_head.safetensors  head.0.*, head.2.* as stored
  t2c_backbone/         the fine-tuned backbone as a model directory: model.safetensors
                        (`base_model.` stripped; the tied lm_head left out, as the
                        base's own files do), config.json and tokenizer files copied
  deeponet.safetensors  branch_net.layers.{2i}.*, trunk_net.layers.{2i}.*, float64
                        (exact copies of the float32 weights)
  piern.json            the reference system: piern router (threshold 0.5, strict),
                        learned T2C on the backbone, the 13 outputs as branch 0..11 and
                        trunk (12, 11), the DeepONet in f64, "{value:.6f}。结论：" and
                        the reference's three conclusions
  piern-extract.json    the same with pimoe's exact T2C: the 13 numbers read from the
                        prompt text instead of regressed by the learned head

Run:
  python3 weights/convert_piern.py --checkpoints PiERN/model \\
      --base-model weights/qwen2.5-0.5b-instruct --out weights/piern
  pimoe generate --manifest weights/piern/piern.json --chat --system "..." --prompt "..."

Options: --force replaces an existing OUT; --backbone-dtype bf16 stores the T2C backbone
in bfloat16 (half the size; the CUDA backend keeps weights in bf16 anyway).
The manifests name the base model by a path relative to OUT.
"""

import argparse
import json
import os
import pickle
import shutil
import sys
import types

import torch
from safetensors import safe_open
from safetensors.torch import save_file

REFERENCE_NAMES = {
    "router": "capacity_token_router.pt",
    "t2c": "capacity_test2computation_module.pt",
    "deeponet": "capacity_expert_model.pt",
}

# The reference's result text: the value with 6 decimals, then a conclusion chosen by
# `> 0.8`, `< 0.6`, otherwise (interpret_soh_value in its capacity_sample_PiERN.py).
TEMPLATE = "{value:.6f}。结论：{conclusion}"
CONCLUSIONS = [
    {"above": 0.8, "text": "电池健康度良好。"},
    {"below": 0.6, "text": "电池严重衰减。"},
    {"text": "电池状态一般。"},
]

# pimoe's exact T2C for the reference's (Chinese) prompts: the 11 currents, t, and the
# current at t in braces; README.md gives the English variant.
EXTRACT_PATTERN = (
    'currents = list[11] after "电流数据为"; t = number after "请计算电池第"; '
    'i_t = braced after "电流数据为"'
)


class ConvertError(Exception):
    pass


# ----------------------------------------------------------------------------
# reading checkpoints
# ----------------------------------------------------------------------------


class _StandInUnpickler(pickle.Unpickler):
    """Resolves classes as usual; one that cannot be imported here (the reference's
    DeepONet lives in its script's __main__) becomes a bare nn.Module subclass of
    that name, which is all that state_dict() needs of it."""

    stand_ins = {}

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            key = (module, name)
            if key not in self.stand_ins:
                self.stand_ins[key] = type(name, (torch.nn.Module,), {"__module__": module})
            return self.stand_ins[key]


_stand_in_pickle = types.SimpleNamespace(
    __name__="pickle", Unpickler=_StandInUnpickler, load=pickle.load, loads=pickle.loads
)


def load_state(path, what):
    """The tensors of a checkpoint that is a state_dict or a whole pickled module."""
    if not os.path.isfile(path):
        raise ConvertError(f"{what} checkpoint: no file {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        print(f"{path}: a pickled module, unpickled with weights_only=False", file=sys.stderr)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_stand_in_pickle)
        except Exception as e:
            raise ConvertError(f"{what} checkpoint {path}: cannot be read: {e}") from e
    except Exception as e:
        raise ConvertError(f"{what} checkpoint {path}: cannot be read: {e}") from e
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConvertError(f"{what} checkpoint {path}: neither a state_dict nor an nn.Module")
    return dict(obj)


def take(state, name, what, path, shape=None):
    """state[name], checked against `shape` (None entries match any size)."""
    if name not in state:
        raise ConvertError(f"{what} checkpoint {path}: missing tensor `{name}`")
    t = state[name]
    if shape is not None and (
        len(t.shape) != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape))
    ):
        want = tuple("*" if s is None else s for s in shape)
        raise ConvertError(f"{what} checkpoint {path}: `{name}` has shape {tuple(t.shape)}, expected {want}")
    return t


def reject_unknown(state, known, what, path):
    extra = sorted(set(state) - set(known))
    if extra:
        more = f" (and {len(extra) - 5} more)" if len(extra) > 5 else ""
        raise ConvertError(f"{what} checkpoint {path}: unexpected tensors {extra[:5]}{more}")


def linear_chain(state, prefix, what, path):
    """The Linear layers of an nn.Sequential stored under `prefix`, in module order:
    [(index, weight (out, in), bias (out))], each feeding the next."""
    idx = sorted(
        int(k[len(prefix) + 1 :].split(".")[0])
        for k in state
        if k.startswith(prefix + ".") and k.endswith(".weight")
    )
    if not idx:
        raise ConvertError(f"{what} checkpoint {path}: no `{prefix}.N.weight` tensors")
    layers = []
    for i in idx:
        w = take(state, f"{prefix}.{i}.weight", what, path, (None, None))
        b = take(state, f"{prefix}.{i}.bias", what, path, (w.shape[0],))
        if layers and layers[-1][1].shape[0] != w.shape[1]:
            raise ConvertError(
                f"{what} checkpoint {path}: `{prefix}.{i}.weight` takes {w.shape[1]} inputs, "
                f"the layer before gives {layers[-1][1].shape[0]}"
            )
        layers.append((i, w, b))
    return layers


# ----------------------------------------------------------------------------
# the base model
# ----------------------------------------------------------------------------


def read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConvertError(f"{what}: no file {path}") from None
    except json.JSONDecodeError as e:
        raise ConvertError(f"{what}: {path} is not valid JSON: {e}") from None


def base_tensor_shapes(base):
    """{name: shape} of the base model's safetensors (headers only)."""
    index = os.path.join(base, "model.safetensors.index.json")
    if os.path.isfile(index):
        files = sorted(set(read_json(index, "base model")["weight_map"].values()))
    else:
        files = sorted(f for f in os.listdir(base) if f.endswith(".safetensors"))
    if not files:
        raise ConvertError(f"base model {base}: no .safetensors weights")
    shapes = {}
    for f in files:
        with safe_open(os.path.join(base, f), framework="pt") as st:
            for k in st.keys():
                shapes[k] = tuple(st.get_slice(k).get_shape())
    return shapes


def tokenizer_size(base):
    """len(tokenizer) as transformers counts it: the vocabulary plus added tokens."""
    tok = read_json(os.path.join(base, "tokenizer.json"), "base model tokenizer")
    ids = set(tok.get("model", {}).get("vocab", {}).values()) | {t["id"] for t in tok.get("added_tokens", [])}
    return len(ids)


# ----------------------------------------------------------------------------
# the three modules
# ----------------------------------------------------------------------------


def convert_router(path, n_tokens):
    what = "router"
    s = load_state(path, what)
    emb = take(s, "embedding.weight", what, path, (None, None))
    v, e = emb.shape
    if v != n_tokens:
        raise ConvertError(
            f"router checkpoint {path}: `embedding.weight` has {v} rows, the base model's tokenizer "
            f"has {n_tokens} tokens: the router was trained on another tokenizer"
        )
    w0 = take(s, "fc.0.weight", what, path, (None, e))
    hidden = w0.shape[0]
    out = {
        "embedding.weight": emb,
        "fc.0.weight": w0,
        "fc.0.bias": take(s, "fc.0.bias", what, path, (hidden,)),
        "fc.2.weight": take(s, "fc.2.weight", what, path, (1, hidden)),
        "fc.2.bias": take(s, "fc.2.bias", what, path, (1,)),
    }
    reject_unknown(s, out, what, path)
    return out, {"vocab": v, "embed_dim": e, "hidden": hidden}


def convert_t2c(path, base, config, backbone_dtype):
    what = "T2C"
    s = load_state(path, what)
    h = config["hidden_size"]
    w0 = take(s, "head.0.weight", what, path, (None, h))
    inner = w0.shape[0]
    w2 = take(s, "head.2.weight", what, path, (None, inner))
    head = {
        "head.0.weight": w0,
        "head.0.bias": take(s, "head.0.bias", what, path, (inner,)),
        "head.2.weight": w2,
        "head.2.bias": take(s, "head.2.bias", what, path, (w2.shape[0],)),
    }
    backbone = {k[len("base_model.") :]: v for k, v in s.items() if k.startswith("base_model.")}
    reject_unknown(s, [*head, *("base_model." + k for k in backbone)], what, path)

    tied = config.get("tie_word_embeddings", False)
    if tied and "lm_head.weight" in backbone:
        # One tensor under two names in a tied model; the base's files keep one.
        if not torch.equal(backbone["lm_head.weight"], backbone.get("model.embed_tokens.weight")):
            raise ConvertError(
                f"T2C checkpoint {path}: `base_model.lm_head.weight` differs from "
                "`base_model.model.embed_tokens.weight`, but the base config ties them"
            )
        del backbone["lm_head.weight"]
    want = base_tensor_shapes(base)
    if tied:
        want.pop("lm_head.weight", None)
    for names, problem in ((set(want) - set(backbone), "missing"), (set(backbone) - set(want), "unexpected")):
        if names:
            listed = ["base_model." + k for k in sorted(names)[:5]]
            more = f" (and {len(names) - 5} more)" if len(names) > 5 else ""
            raise ConvertError(
                f"T2C checkpoint {path}: {problem} backbone tensors {listed}{more} (compared with {base})"
            )
    for k, shape in want.items():
        if tuple(backbone[k].shape) != shape:
            raise ConvertError(
                f"T2C checkpoint {path}: `base_model.{k}` has shape {tuple(backbone[k].shape)}, "
                f"the base model's has {shape}"
            )
    if backbone_dtype == "bf16":
        backbone = {k: v.to(torch.bfloat16) for k, v in backbone.items()}
    return head, backbone, {"inner": inner, "outputs": w2.shape[0]}


def convert_deeponet(path):
    what = "DeepONet"
    s = load_state(path, what)
    out, widths, known = {}, {}, []
    for src, dst in (("n_branch_net", "branch_net.layers"), ("chunk_net", "trunk_net.layers")):
        layers = linear_chain(s, src, what, path)
        for j, (i, w, b) in enumerate(layers):
            out[f"{dst}.{2 * j}.weight"] = w.to(torch.float64)
            out[f"{dst}.{2 * j}.bias"] = b.to(torch.float64)
            known += [f"{src}.{i}.weight", f"{src}.{i}.bias"]
        widths[src] = [layers[0][1].shape[1]] + [w.shape[0] for _, w, _ in layers]
    # The reference defines output_net but its forward never calls it.
    known += [k for k in s if k.startswith("output_net.")]
    reject_unknown(s, known, what, path)
    branch, trunk = widths["n_branch_net"], widths["chunk_net"]
    if branch[-1] != trunk[-1]:
        raise ConvertError(
            f"DeepONet checkpoint {path}: the branch net ends in {branch[-1]} features, the trunk net in {trunk[-1]}"
        )
    if trunk[0] != 2:
        raise ConvertError(
            f"DeepONet checkpoint {path}: the trunk net takes {trunk[0]} inputs; the reference feeds it "
            "the last two T2C outputs, swapped"
        )
    return out, branch, trunk


# ----------------------------------------------------------------------------
# manifests and output
# ----------------------------------------------------------------------------


def manifests(llm, router_cfg, t2c_cfg, branch, trunk):
    nb = branch[0]
    expert = {
        "name": "soh",
        "t2c": None,
        # The reference feeds outputs[:, :nb] to the branch net and outputs[:, nb:] with
        # its two columns swapped to the trunk net.
        "order": f"0..{nb} | {nb + 1}, {nb}",
        "expert": {
            "kind": "deeponet",
            "weights": "deeponet.safetensors",
            "branch": branch,
            "trunk": trunk,
            "activation": "relu",
            "precision": "f64",
        },
        "format": {"template": TEMPLATE, "conclusions": CONCLUSIONS},
    }
    router = {
        "kind": "piern",
        "weights": "router.safetensors",
        "experts": ["soh"],
        **router_cfg,
        # The reference fires on every token whose probability is > 0.5, with no pause
        # after a result and no limit.
        "policy": {"threshold": 0.5},
    }
    learned = {
        "kind": "piern",
        "weights": "t2c_head.safetensors",
        "backbone": "t2c_backbone",
        **t2c_cfg,
    }
    exact = {"kind": "extract", "pattern": EXTRACT_PATTERN}
    return {
        name: {"llm": llm, "router": router, "experts": [{**expert, "t2c": t2c}]}
        for name, t2c in (("piern.json", learned), ("piern-extract.json", exact))
    }


def write_json(path, doc):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=2)
        f.write("\n")


def convert(args):
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not args.force:
        raise ConvertError(f"{out} exists; pass --force to replace it")
    base = os.path.abspath(args.base_model)
    if not os.path.isdir(base):
        raise ConvertError(f"base model: no directory {base}")
    config = read_json(os.path.join(base, "config.json"), "base model config")
    paths = {k: getattr(args, k) or os.path.join(args.checkpoints or "", v) for k, v in REFERENCE_NAMES.items()}
    if not args.checkpoints and not all(getattr(args, k) for k in REFERENCE_NAMES):
        raise ConvertError("give --checkpoints DIR (the reference's model folder) or all of --router, --t2c, --deeponet")

    router, router_cfg = convert_router(paths["router"], tokenizer_size(base))
    head, backbone, t2c_cfg = convert_t2c(paths["t2c"], base, config, args.backbone_dtype)
    deeponet, branch, trunk = convert_deeponet(paths["deeponet"])
    if branch[0] + trunk[0] != t2c_cfg["outputs"]:
        raise ConvertError(
            f"the T2C head gives {t2c_cfg['outputs']} numbers, the DeepONet takes {branch[0]} + {trunk[0]}"
        )

    tmp = f"{out}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "t2c_backbone"))
    try:
        # What transformers expects of a model's safetensors; one key, as the writer
        # orders several at random and the files should be reproducible.
        meta = {"format": "pt"}
        for tensors, name in (
            (router, "router.safetensors"),
            (head, "t2c_head.safetensors"),
            (deeponet, "deeponet.safetensors"),
            (backbone, "t2c_backbone/model.safetensors"),
        ):
            save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(tmp, name), metadata=meta)
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            if os.path.isfile(os.path.join(base, name)):
                shutil.copyfile(os.path.join(base, name), os.path.join(tmp, "t2c_backbone", name))
        llm = os.path.relpath(base, out)
        for name, doc in manifests(llm, router_cfg, t2c_cfg, branch, trunk).items():
            write_json(os.path.join(tmp, name), doc)
        if os.path.exists(out):
            old = f"{out}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(
        f"wrote {out}: router {router_cfg['vocab']}x{router_cfg['embed_dim']}, T2C head "
        f"{config['hidden_size']}->{t2c_cfg['inner']}->{t2c_cfg['outputs']}, backbone "
        f"{len(backbone)} tensors, DeepONet branch {branch} trunk {trunk}"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoints", help="the reference's model folder (the three .pt files by their names)")
    p.add_argument("--router", help=f"router checkpoint (default DIR/{REFERENCE_NAMES['router']})")
    p.add_argument("--t2c", help=f"T2C checkpoint (default DIR/{REFERENCE_NAMES['t2c']})")
    p.add_argument("--deeponet", help=f"DeepONet checkpoint (default DIR/{REFERENCE_NAMES['deeponet']})")
    p.add_argument("--base-model", required=True, help="the base model directory (Qwen2.5-0.5B-Instruct)")
    p.add_argument("--out", required=True, help="the output directory")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument(
        "--backbone-dtype",
        choices=["keep", "bf16"],
        default="keep",
        help="the T2C backbone's stored dtype: as in the checkpoint (default) or bfloat16",
    )
    args = p.parse_args(argv)
    try:
        convert(args)
    except ConvertError as e:
        print(f"convert_piern: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
