"""How much memory a GRPO configuration needs, before it runs (``python -m companion plan-run``).

The budget has a resident part that lives through the whole run and two phases that alternate:

    resident  = weights + AdamW moments (2 per weight) [+ reference model]
    rollout   = KV cache of every completion being sampled (+ the copy made when a prompt's
                prefill is shared by its G samples)
    update    = activations kept for the backward pass of one micro-batch
                + the transient full-vocabulary fp32 logits of one log-prob chunk
                + the gradients accumulated so far (all of them from the second micro-batch on;
                  they are freed after each optimizer step)
    peak      = resident + max(rollout, update)

Activations are counted tensor by tensor for this implementation of the model (per token and
layer: the residual stream with its normalized and weighted copies, q/k/v with their normalized
and rotated versions, the attention output, four MLP tensors of the intermediate size). A prompt
runs once per micro-batch however many of its completions are there, and each completion row
keeps its prompt's keys and values next to its own in every layer. The numbers are live tensor
bytes: the C allocator may keep freed memory cached on top of them.
"""
from __future__ import annotations

from dataclasses import dataclass

from companion.config import ModelConfig
from companion.rl.config import GRPOConfig
from companion.rl.logprobs import auto_chunk

GIB = 1024**3
MIB = 1024**2


def num_parameters(config: ModelConfig) -> int:
    C, I, D = config.hidden_size, config.intermediate_size, config.head_dim
    H, K = config.num_attention_heads, config.num_key_value_heads
    attention = C * H * D * 2 + C * K * D * 2  # q, o; k, v
    if config.qkv_bias:
        attention += H * D + 2 * K * D
    norms = 2 * C + (2 * D if config.qk_norm else 0)
    per_layer = attention + 3 * C * I + norms
    embeddings = config.vocab_size * C * (1 if config.tie_word_embeddings else 2)
    return config.num_hidden_layers * per_layer + embeddings + C


def activation_floats_per_token(config: ModelConfig) -> int:
    """Elements one token keeps for the backward pass, over all layers (see the module docstring).

    Per layer: the residual stream, its normalized and its weighted copy, before attention and
    before the MLP (6C); q: projected, normalized, rotated, attention output (4HD); k likewise and
    v (4KD); the MLP's gate, up, silu(gate) and product (4I); per-row norm statistics and the
    attention's log-sum-exp. Outside the layers: the final norm's input and output, cos and sin.
    """
    C, I, D = config.hidden_size, config.intermediate_size, config.head_dim
    H, K = config.num_attention_heads, config.num_key_value_heads
    per_layer = 6 * C + 4 * H * D + 4 * K * D + 4 * I + 2 * H + K + 2
    return config.num_hidden_layers * per_layer + 2 * C + 2 * D + 3


@dataclass
class MemoryPlan:
    items: dict[str, int]  # name -> bytes
    resident: int
    rollout: int
    update: int
    completion_tokens_per_step: int
    tokens_per_step: int
    notes: list[str]

    @property
    def peak(self) -> int:
        return self.resident + max(self.rollout, self.update)

    def format(self) -> str:
        width = max(len(name) for name in self.items)
        lines = [f"{name:<{width}}  {_size(size)}" for name, size in self.items.items()]
        lines += ["-" * (width + 12),
                  f"{'resident':<{width}}  {_size(self.resident)}",
                  f"{'rollout phase':<{width}}  {_size(self.rollout)}",
                  f"{'update phase':<{width}}  {_size(self.update)}",
                  f"{'peak':<{width}}  {_size(self.peak)}",
                  f"tokens per step: {self.completion_tokens_per_step:,} completion (at most) + "
                  f"{self.tokens_per_step - self.completion_tokens_per_step:,} prompt"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _size(size: int) -> str:
    return f"{size / GIB:8.2f} GiB" if size >= GIB else f"{size / MIB:8.1f} MiB"


def plan(model_config: ModelConfig, config: GRPOConfig, prompt_tokens: int, dtype_bytes: int = 4) -> MemoryPlan:
    """The budget of ``config`` on a model of ``model_config`` whose weights take ``dtype_bytes``
    each, for prompts of about ``prompt_tokens`` tokens."""
    P, G, L = config.prompts_per_step, config.group_size, config.max_new_tokens
    n = num_parameters(model_config)
    items = {"weights": n * dtype_bytes, "gradients": n * dtype_bytes, "AdamW moments": 2 * n * dtype_bytes}
    if config.uses_reference:
        items["reference model"] = n * dtype_bytes
    draws = config.max_draws if config.dynamic_sampling else 1
    rows = (config.rollout_prompts or P) * G  # completions sampled together
    cache_per_row = 2 * model_config.num_hidden_layers * model_config.num_key_value_heads * model_config.head_dim
    kv = rows * (prompt_tokens + L) * cache_per_row * dtype_bytes
    items["KV cache (rollouts)"] = int(kv * (1 + 1 / G))  # the shared prefill is copied G times
    M = min(config.micro_batch, P * G)
    aligned = M % G == 0 or G % M == 0  # micro-batches never split a group unevenly
    prompts = min(P, -(-M // G) + (0 if aligned else 1))  # distinct prompts in a micro-batch
    # Each prompt runs once ("shared" layout); every completion row then holds its prompt's keys
    # and values concatenated with its own, in every layer.
    micro_tokens = prompts * prompt_tokens + M * (L - 1)
    gathered_kv = M * (prompt_tokens + L - 1) * cache_per_row
    items["activations (one micro-batch)"] = (micro_tokens * activation_floats_per_token(model_config)
                                              + gathered_kv) * dtype_bytes
    chunk = min(config.logprob_chunk or auto_chunk(model_config.vocab_size), M * L)
    # logits, probabilities and their gradient, in fp32, for one chunk of positions
    items["full-vocab fp32 logits (one chunk)"] = 3 * chunk * model_config.vocab_size * 4
    resident = items["weights"] + items["AdamW moments"] + items.get("reference model", 0)
    rollout = items["KV cache (rollouts)"]  # gradients are freed after each optimizer step
    update = items["activations (one micro-batch)"] + items["full-vocab fp32 logits (one chunk)"]
    rows_per_update = -(-P * G // config.minibatches)
    if rows_per_update > M:  # later micro-batches run forward while the accumulated gradients exist
        update += items["gradients"]
    else:  # one micro-batch: when backward starts, only the LM head's gradient exists yet
        head = model_config.vocab_size * model_config.hidden_size * dtype_bytes
        update = max(update + head, items["gradients"])
    notes = []
    if draws > 1:
        notes.append(f"dynamic sampling may sample up to {draws} rounds of prompts per step (time, not memory)")
    if dtype_bytes == 2:
        notes.append("bf16 weights: AdamW moments are bf16 too; fp32 master weights would add 4 bytes per weight")
    completion = P * G * L * draws
    return MemoryPlan(items, resident, rollout, update, completion, completion + P * G * prompt_tokens * draws, notes)
