"""A random-weight model with the Qwen2.5-0.5B-Instruct config, for checking our CUDA
backend against transformers on the GPU machine (which has torch and transformers but
no network, so the config is written out here rather than downloaded).

    python3 bench/gpu/qwen_reference.py OUT_DIR [--tokens 64] [--seed 0]

Writes OUT_DIR/{config.json, model.safetensors} (weights in bf16, as we load them) and
OUT_DIR/reference.safetensors with `input_ids` (tokens,) int64 and `logits`
(tokens, vocab) f32, computed by transformers in f32 from the same bf16-rounded
weights: the reference our bf16-weight, f32-activation kernels should approach.
Then: PIMOE_QWEN_REF=OUT_DIR <tests/gpu_model binary> qwen25_random_matches_transformers
"""

import argparse
import os

import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

# Qwen/Qwen2.5-0.5B-Instruct config.json, the fields that shape the computation.
QWEN25_05B = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    tie_word_embeddings=True,
    hidden_act="silu",
    bos_token_id=151643,
    eos_token_id=151645,
    use_sliding_window=False,
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    cfg = Qwen2Config(**QWEN25_05B)
    cfg.torch_dtype = "bfloat16"
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    # Default init gives near-zero biases; make the q/k/v biases matter.
    with torch.no_grad():
        for layer in model.model.layers:
            for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                p.bias.normal_(0.0, 0.02)
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)

    ref = model.float().cuda().eval()
    ids = torch.randint(0, cfg.vocab_size, (1, a.tokens), generator=torch.Generator().manual_seed(a.seed + 1))
    with torch.no_grad():
        logits = ref(ids.cuda()).logits[0].float().cpu()
    save_file({"input_ids": ids[0].to(torch.int64), "logits": logits.contiguous()},
              os.path.join(a.out, "reference.safetensors"))
    print(f"wrote {a.out}: {a.tokens} tokens, logits {tuple(logits.shape)}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
