"""Qwen3 model demo: build a tiny random Qwen3, write it as a Hugging Face folder (config.json +
model.safetensors, HF parameter names), load it back, and generate greedily with the KV cache,
checking that cached decoding equals recomputation. Or load a real checkpoint folder with --load.

    python appendixes/qwen3_model/main.py
    python appendixes/qwen3_model/main.py --layers 4 --hidden 128 --save tiny-qwen3 --plot params.png
    python appendixes/qwen3_model/main.py --load path/to/Qwen3-0.6B --prompt-ids 785 6722 315 9625 374

Exits non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from qwen3 import (KVCache, Qwen3Config, Qwen3Model, generate, hf_names, load_hf_folder, load_safetensors,
                   parameter_groups, read_safetensors_header, save_hf_folder, save_safetensors)

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f"  ({detail})" if detail else ""))
    if not ok:
        FAILURES.append(name)


def describe(config: Qwen3Config, title: str) -> dict[str, int]:
    groups = parameter_groups(config)
    total = sum(groups.values())
    parts = ", ".join(f"{name} {count / total:.0%}" for name, count in groups.items())
    print(f"   {title}: {total:,} parameters ({parts})")
    return groups


@torch.no_grad()
def cached_step_logits(model: Qwen3Model, tokens: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Logits predicting tokens[prompt_len:], computed the cached way: prefill, then one token per step."""
    cache = KVCache(model.config, tokens.shape[0], tokens.shape[1], dtype=model.embed.weight.dtype)
    steps = [model(tokens[:, :prompt_len], cache=cache, start=0)[:, -1]]
    for t in range(prompt_len, tokens.shape[1] - 1):
        steps.append(model(tokens[:, t:t + 1], cache=cache, start=t)[:, -1])
    return torch.stack(steps, dim=1)  # (B, N, V)


def check_generation(model: Qwen3Model, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    cached = generate(model, prompt, new_tokens, use_cache=True)
    full = generate(model, prompt, new_tokens, use_cache=False)
    check("greedy generation: cached tokens == recomputed tokens", torch.equal(cached, full))
    with torch.no_grad():
        reference = model(cached)[:, prompt.shape[1] - 1:-1]  # one pass over the final sequence
    steps = cached_step_logits(model, cached, prompt.shape[1])
    scale = reference.abs().max().item()
    diff = (steps - reference).abs().max().item()
    check("logits of every cached step == one uncached pass", diff <= 1e-4 * max(1.0, scale),
          f"max |diff| = {diff:.1e}, max |logit| = {scale:.1f}")
    return cached


def run_random(args) -> None:
    config = Qwen3Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, head_dim=args.head_dim,
                         tie_word_embeddings=not args.untied, max_position_embeddings=4096)
    model = Qwen3Model(config).init_weights(std=args.std, seed=args.seed).eval()
    print(f"Tiny Qwen3: {config}")
    print("1. Parameters")
    groups = describe(config, "this model")
    n_params = sum(p.numel() for p in model.parameters())  # parameters() counts a tied matrix once
    check("parameter count == the per-group formula", n_params == sum(groups.values()), f"{n_params:,}")
    describe(Qwen3Config(), "Qwen3-0.6B, for scale")

    temporary = tempfile.TemporaryDirectory() if args.save is None else None
    folder = Path(args.save or temporary.name) / "tiny-qwen3"
    try:
        print(f"2. A Hugging Face-format folder: {folder}")
        save_hf_folder(model, folder)
        for path in sorted(folder.iterdir()):
            print(f"   {path.name:<20} {path.stat().st_size:>10,} bytes")
        header, data_start = read_safetensors_header(folder / "model.safetensors")
        print(f"   safetensors: 8-byte length, {data_start - 8}-byte JSON header, then raw data; e.g.")
        for name in list(header)[:3]:
            print(f"     {name}: {header[name]}")
        check("the file holds exactly the HF names (a tied head is stored once)",
              set(header) - {"__metadata__"} == set(hf_names(config)))
        loaded = load_hf_folder(folder)
        same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
        check("loaded weights are bit-identical", same)
        check("tied embeddings are still tied after loading",
              (loaded.lm_head.weight is loaded.embed.weight) == config.tie_word_embeddings)
        prompt = torch.randint(0, config.vocab_size, (args.batch, args.prompt_len))
        with torch.no_grad():
            check("loaded model gives identical logits", torch.equal(model(prompt), loaded(prompt)))
        check("config.json round trip", Qwen3Config.from_hf(json.loads((folder / "config.json").read_text())) == config)

        half = save_hf_folder(model, folder.with_name("tiny-qwen3-bf16"), dtype=torch.bfloat16)
        ratio = (half / "model.safetensors").stat().st_size / (folder / "model.safetensors").stat().st_size
        from_bf16 = load_hf_folder(half, dtype=torch.float32)
        rounded = all(torch.equal(a.to(torch.bfloat16).float(), b)
                      for a, b in zip(model.state_dict().values(), from_bf16.state_dict().values()))
        check("a bf16 folder is half the size and loads as the bf16-rounded weights", rounded and ratio < 0.51,
              f"size ratio {ratio:.3f}")

        broken = folder.with_name("tiny-qwen3-broken")
        broken.mkdir(exist_ok=True)
        (broken / "config.json").write_text((folder / "config.json").read_text())
        tensors = dict(load_safetensors(folder / "model.safetensors"))
        tensors.pop("model.layers.0.self_attn.k_norm.weight")
        save_safetensors(tensors, broken / "model.safetensors")
        try:
            load_hf_folder(broken)
            check("a folder missing a tensor is refused", False)
        except ValueError as error:
            check("a folder missing a tensor is refused", "self_attn.k_norm.weight" in str(error),
                  "the error names model.layers.0.self_attn.k_norm.weight")

        print(f"3. Greedy generation, batch {args.batch}, {args.new_tokens} new tokens")
        tokens = check_generation(loaded, prompt, args.new_tokens)
        for row in tokens.tolist():
            print(f"   {row[:args.prompt_len]} -> {row[args.prompt_len:]}")
    finally:
        if temporary is not None:
            temporary.cleanup()

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        configs = {"this tiny model": config, "Qwen3-0.6B": Qwen3Config()}
        names = ["embedding", "attention", "mlp", "norms"]
        for i, (title, cfg) in enumerate(configs.items()):
            groups = parameter_groups(cfg)
            total = sum(groups.values())
            ax.bar([j + 0.4 * i for j in range(len(names))], [groups[n] / total for n in names], width=0.4,
                   label=f"{title} ({total / 1e6:.2f}M)")
        ax.set_xticks([j + 0.2 for j in range(len(names))], names)
        ax.set_ylabel("share of parameters")
        ax.set_title("Where a Qwen3 model's parameters are")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"saved {args.plot}")


def run_folder(args) -> None:
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = load_hf_folder(args.load, dtype=dtype)
    print(f"Loaded {args.load}: {model.config}")
    describe(model.config, "this checkpoint")
    prompt = torch.tensor([args.prompt_ids])
    print(f"Greedy generation of {args.new_tokens} tokens after {args.prompt_ids}")
    tokens = check_generation(model, prompt, args.new_tokens)
    print(f"   -> {tokens[0, prompt.shape[1]:].tolist()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--intermediate", type=int, default=192)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--untied", action="store_true", help="a separate lm_head instead of tied embeddings")
    parser.add_argument("--std", type=float, default=0.1, help="init std of the random weights")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--prompt-len", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", metavar="DIR", help="keep the written folders in DIR (default: a temporary dir)")
    parser.add_argument("--load", metavar="DIR", help="run an existing HF-format Qwen3 folder instead")
    parser.add_argument("--prompt-ids", type=int, nargs="+", default=[1, 2, 3], help="token ids for --load")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="compute dtype for --load")
    parser.add_argument("--plot", metavar="PATH", help="save where the parameters are, tiny model vs Qwen3-0.6B")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.load:
        run_folder(args)
    else:
        run_random(args)
    if FAILURES:
        print(f"FAILED: {', '.join(FAILURES)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
