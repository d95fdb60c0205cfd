"""Tiny random transformers models and matching companion models, for parity tests."""
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=128, max_position_embeddings=512, rope_theta=10000.0)


def tiny_hf_model(family: str = "qwen3", tied: bool = False, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    settings = {**TINY, "tie_word_embeddings": tied, **overrides}
    if family == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=16, **settings))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**settings))
    return model.eval()


def save_hf(model, folder: Path) -> Path:
    model.save_pretrained(folder)
    return folder
