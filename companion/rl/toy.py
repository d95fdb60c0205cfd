"""Small stand-ins for a real policy: a BPE tokenizer trained in a fraction of a second on
arithmetic problems and a randomly initialized Qwen3 model of any size. Tests, the TRL
benchmark and quick experiments use them where loading the shipped model is not the point.
"""
from __future__ import annotations

import functools

from companion.config import ModelConfig
from companion.model import Qwen3Model


@functools.lru_cache(maxsize=4)
def toy_tokenizer(vocab_size: int = 512, examples: int = 300, gsm8k: bool = False):
    """A byte-level BPE with Qwen3's special tokens and chat template, trained on the rendered
    chats of the first ``examples`` arithmetic training problems (plus GSM8K's training set with
    ``gsm8k``, whose wider vocabulary lets the BPE reach a few thousand tokens)."""
    import json
    import os
    from pathlib import Path

    from companion.prompts import build_prompt
    from companion.synthetic import read_split
    from companion.tiny import _PromptRenderer, train_tokenizer

    records = read_split("train")[:examples]
    renderer = _PromptRenderer()
    texts = [build_prompt(renderer, r["question"], "cot") + r["solution"].replace("#### ", "The answer is \\boxed{")
             + "}.<|im_end|>\n" for r in records]
    if gsm8k:
        folder = Path(os.environ.get("REASONING_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
        with open(folder / "gsm8k" / "train.jsonl", encoding="utf-8") as handle:
            texts += [row["question"] + "\n" + row["answer"] for row in map(json.loads, handle)]
    return train_tokenizer(texts, vocab_size=vocab_size)


def toy_problems(split: str = "train", count: int = 64) -> list[dict]:
    """The first ``count`` arithmetic problems of a split, as dicts with question and answer."""
    from companion.synthetic import read_split

    return [{"id": r["id"], "question": r["question"], "answer": r["answer"]} for r in read_split(split)[:count]]


def toy_model(vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
              head_dim: int = 16, intermediate: int | None = None, seed: int = 0, std: float = 0.02,
              max_positions: int = 2048, eos_token_id: int | None = None) -> Qwen3Model:
    config = ModelConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate or 3 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         head_dim=head_dim, max_position_embeddings=max_positions, rope_theta=10000.0,
                         tie_word_embeddings=True, eos_token_id=eos_token_id, torch_dtype="float32")
    return Qwen3Model(config).init_weights(seed=seed, std=std)
