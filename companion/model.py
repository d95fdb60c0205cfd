"""Qwen3 (and Qwen2.5) written from scratch.

Shapes: B batch, T new positions in this call, S key positions (cache length so far), H query heads,
K key/value heads, D head dim, C hidden size, V vocabulary.

The two families differ only in attention: Qwen3 normalizes q and k per head (QK-norm) and has no
bias; Qwen2.5 has a bias on q, k, v and no QK-norm. Both are a ``ModelConfig`` switch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from companion.config import ModelConfig


class RMSNorm(nn.Module):
    """Scale each vector to unit root-mean-square, then by a learned gain.

    The statistics are computed in fp32 even for bf16 activations (a sum of squares in bf16 loses
    most of its digits); the result is cast back before the gain, as Qwen does.
    """

    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # The casts are skipped for fp32 input: each call, even one that does nothing, costs a launch.
    x32 = x if x.dtype == torch.float32 else x.float()
    # sum * (1/D) rather than mean(): same value, about half the kernel launches on CPU
    mean_square = (x32 * x32).sum(dim=-1, keepdim=True) * (1.0 / x.shape[-1])
    normed = x32 * torch.rsqrt(mean_square + eps)
    return weight * (normed if x.dtype == torch.float32 else normed.to(x.dtype))


# ---- rotary position embedding -------------------------------------------------------------------

def rope_frequencies(head_dim: int, theta: float, device=None) -> torch.Tensor:
    """Inverse frequencies theta^(-2i/D) for i in [0, D/2): (D/2,) fp32."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta ** exponents)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * frequency, in the half-split layout: positions (...,) -> (..., D) fp32."""
    angles = positions.float()[..., None] * inv_freq  # (..., D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (..., D): dims i and i + D/2 share a frequency
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (x_i, x_{i+D/2}) pair by its position's angle. x (B, H, T, D); cos/sin (B, 1, T, D)."""
    return x * cos + rotate_half(x) * sin


def apply_rope_signed(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """``apply_rope`` in four kernels instead of seven, for the decode loop; bit for bit the same.

    ``rotate_half(x) * sin`` is ``(-x2, x1) * (s, s)``, which equals ``(x2, x1) * (-s, s)``: swap
    the halves with one ``flip`` and move the sign into ``signed_sin = (-s, s)``, computed once per
    step. (``addcmul`` would save one more kernel, but its fused multiply-add rounds differently.)
    """
    swapped = x.unflatten(-1, (2, -1)).flip(-2).flatten(-2)  # (x2, x1)
    return x * cos + swapped * signed_sin


# ---- attention -----------------------------------------------------------------------------------

def attention_written_out(q, k, v, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Grouped-query attention spelled out; the teaching twin of ``scaled_dot_product_attention``.

    q (B, H, T, D); k, v (B, K, S, D); mask (B or 1, 1, T, S) bool, True = may attend, or None for
    causal attention where the T queries are the last T of the S keys.
    """
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # (B, H, S, D): each key/value head serves `group` query heads
    v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if mask is None:
        T, S = scores.shape[-2:]
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return weights @ v  # (B, H, T, D)


def attention_sdpa(q, k, v, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The same computation through PyTorch's fused kernel."""
    T, S = q.shape[-2], k.shape[-2]
    if mask is None and T > 1 and T != S:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=(mask is None and T > 1), enable_gqa=q.shape[1] != k.shape[1]
    )


ATTENTION_IMPLEMENTATIONS = {"sdpa": attention_sdpa, "written_out": attention_written_out}


class KVCache:
    """Preallocated keys and values of every layer: (layers, B, K, max_len, D) each.

    Rows are left-padded so that all rows write the same position at each step; a row's own
    position (for RoPE) is its cache position minus its padding.
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)

    @property
    def keys(self) -> torch.Tensor:
        return self._keys

    @keys.setter
    def keys(self, tensor: torch.Tensor) -> None:
        self._keys, self._layer_keys = tensor, tensor.unbind(0)  # per-layer views, made once

    @property
    def values(self) -> torch.Tensor:
        return self._values

    @values.setter
    def values(self, tensor: torch.Tensor) -> None:
        self._values, self._layer_values = tensor, tensor.unbind(0)

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int):
        """Write k, v (B, K, T, D) at [start, start+T) and return all keys/values up to there."""
        end = start + k.shape[2]
        if end > self.max_len:
            raise IndexError(f"KV cache holds {self.max_len} positions; asked to write up to {end}")
        keys, values = self._layer_keys[layer], self._layer_values[layer]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return keys[:, :, :end], values[:, :, :end]

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (finished sequences stop costing compute)."""
        self.keys = self.keys.index_select(1, rows)
        self.values = self.values.index_select(1, rows)

    def repeat_rows(self, times: int) -> None:
        """Each row becomes `times` consecutive rows: one prompt prefill shared by several samples."""
        self.keys = self.keys.repeat_interleave(times, dim=1)
        self.values = self.values.repeat_interleave(times, dim=1)

    def prefix(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of one layer's keys and values at [0, end): (B, K, end, D) each."""
        return self._layer_keys[layer][:, :, :end], self._layer_values[layer][:, :, :end]

    def write_pending(self, pending: list[tuple[list, list]], start: int) -> None:
        """Store the keys/values that ``decode_step_pending`` held back: per layer two lists of
        (B, K, D), one entry per step, written at [start, start + steps)."""
        for layer, (keys, values) in enumerate(pending):
            self.update(layer, torch.stack(keys, dim=2), torch.stack(values, dim=2), start)

    def append_one(self, layer: int, k: torch.Tensor, v: torch.Tensor, position: int):
        """``update`` for the decode step's one position: k, v (B, K, D) -> keys/values (B, K, position+1, D)."""
        return self.update(layer, k[:, :, None], v[:, :, None], position)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        C, D = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(C, self.num_heads * D, bias=config.qkv_bias, **factory)
        self.k_proj = nn.Linear(C, self.num_kv_heads * D, bias=config.qkv_bias, **factory)
        self.v_proj = nn.Linear(C, self.num_kv_heads * D, bias=config.qkv_bias, **factory)
        self.o_proj = nn.Linear(self.num_heads * D, C, bias=False, **factory)
        self.q_norm = RMSNorm(D, config.rms_norm_eps, **factory) if config.qk_norm else None
        self.k_norm = RMSNorm(D, config.rms_norm_eps, **factory) if config.qk_norm else None
        self.attend = attention_sdpa

    def forward(self, x, cos, sin, mask=None, cache: KVCache | None = None, layer: int = 0, start: int = 0):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:  # Qwen3: per-head RMSNorm keeps attention logits in range
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v, start)  # (B, K, S, D) with S = start + T
        out = self.attend(q, k, v, mask)  # (B, H, T, D)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig, device=None, dtype=None):
        super().__init__()
        factory = dict(bias=False, device=device, dtype=dtype)
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, **factory)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, **factory)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, **factory)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **factory)
        self.attn = Attention(config, **factory)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **factory)
        self.mlp = FeedForward(config, **factory)

    def forward(self, x, cos, sin, mask=None, cache=None, layer=0, start=0):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, layer, start)
        return x + self.mlp(self.mlp_norm(x))


def linear_one_step(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` for the decode step, (B, C) -> (B, N). On CPU, PyTorch's bf16/fp16 kernel for
    ``h @ weight.T`` with a few rows reads the weights at about half the speed that ``weight @ h.T``
    (or ``torch.mv`` for one row) does, measured on Qwen3-0.6B's shapes; at small batch, reading
    the weights is the whole cost of a step. Past about 64 rows the plain kernel wins again."""
    if h.dtype in (torch.bfloat16, torch.float16) and h.device.type == "cpu" and h.shape[0] <= 32:
        out = torch.mv(weight, h[0])[None] if h.shape[0] == 1 else (weight @ h.t()).t().contiguous()
        return out if bias is None else out + bias
    return F.linear(h, weight, bias)


FUSE_MAX_PARAMETERS = 100_000_000


class DecodeWeights:
    """One layer's weights for ``Qwen3Model.decode_step``: stacked, or the layer's own when not fused."""

    def __init__(self, qkv, qkv_bias, qk_norm, gate_up, separate):
        self.qkv, self.qkv_bias = qkv, qkv_bias  # (H*D + 2*K*D, C), or None when not fused
        self.qk_norm = qk_norm  # (H + K, D): q_norm's gain repeated per q head, then k_norm's, or None
        self.gate_up = gate_up  # (2 * I, C), or None when not fused
        self.separate = separate  # the block itself, when not fused

    @classmethod
    def of(cls, block: TransformerBlock, fuse: bool) -> "DecodeWeights":
        attn, mlp = block.attn, block.mlp
        qk_norm = None
        if attn.q_norm is not None:
            qk_norm = torch.cat((attn.q_norm.weight.expand(attn.num_heads, -1),
                                 attn.k_norm.weight.expand(attn.num_kv_heads, -1)))
        if not fuse:
            return cls(None, None, qk_norm, None, block)
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        qkv = torch.cat([p.weight for p in projections])
        bias = torch.cat([p.bias for p in projections]) if attn.q_proj.bias is not None else None
        return cls(qkv, bias, qk_norm, torch.cat((mlp.gate_proj.weight, mlp.up_proj.weight)), None)

    def qkv_of(self, h: torch.Tensor) -> torch.Tensor:
        """(B, C) -> (B, H*D + 2*K*D)."""
        if self.qkv is not None:
            return linear_one_step(h, self.qkv, self.qkv_bias)
        attn = self.separate.attn
        return torch.cat([linear_one_step(h, p.weight, p.bias) for p in (attn.q_proj, attn.k_proj, attn.v_proj)],
                         dim=-1)

    def gate_up_of(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C) -> gate (B, I), up (B, I)."""
        if self.gate_up is not None:
            return linear_one_step(h, self.gate_up).chunk(2, dim=-1)
        mlp = self.separate.mlp
        return linear_one_step(h, mlp.gate_proj.weight), linear_one_step(h, mlp.up_proj.weight)


class Qwen3Model(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, config: ModelConfig, device=None, dtype=None):
        """``device="meta"`` builds the structure without allocating memory (see checkpoint.build_model)."""
        super().__init__()
        self.config = config
        factory = dict(device=device, dtype=dtype)
        if device is not None and torch.device(device).type == "meta":
            # On meta, Embedding's normal_() init goes through torch._refs and imports torch._dynamo
            # (seconds); a meta model has no values to initialize anyway.
            empty = torch.empty(config.vocab_size, config.hidden_size, **factory)
            self.embed = nn.Embedding(config.vocab_size, config.hidden_size, _weight=empty)
        else:
            self.embed = nn.Embedding(config.vocab_size, config.hidden_size, **factory)
        self.blocks = nn.ModuleList(TransformerBlock(config, **factory) for _ in range(config.num_hidden_layers))
        self.final_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **factory)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, **factory)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight
        self.reset_rope()

    def reset_rope(self) -> None:
        """RoPE frequencies, kept in fp32 and outside the state dict (model.to(bf16) must not round them)."""
        device = None if self.device.type == "meta" else self.device  # meta has no values to compute
        self.inv_freq = rope_frequencies(self.config.head_dim, self.config.rope_theta, device=device)

    def init_weights(self, seed: int | None = None, std: float = 0.02) -> "Qwen3Model":
        """Random weights as in HF's initializer: normal(0, std) matrices, zero biases, unit norms."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                with torch.no_grad():
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        return self

    def set_attention(self, implementation: str) -> None:
        """Switch between the fused kernel ("sdpa") and the written-out teaching version."""
        for block in self.blocks:
            block.attn.attend = ATTENTION_IMPLEMENTATIONS[implementation]

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of each position's angles, fp32: positions (...,) -> (..., D) each."""
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        return rope_cos_sin(positions, self.inv_freq)

    def decode_rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos`` and ``signed_sin`` for ``apply_rope_signed`` in the decode step, made once per step:
        positions (B,) -> (B, 1, D) each, in ``dtype``, shared by all heads."""
        D = self.config.head_dim
        cos, sin = self.rope(positions)  # (B, D) fp32
        signed_sin = torch.cat((-sin[:, None, : D // 2], sin[:, None, D // 2:]), dim=-1)
        return cos[:, None].to(dtype), signed_sin.to(dtype)

    def hidden_states(self, input_ids, positions=None, mask=None, cache: KVCache | None = None, start: int = 0):
        """The final-norm hidden states (B, T, C), before the LM head."""
        B, T = input_ids.shape
        if positions is None:
            positions = torch.arange(start, start + T, device=input_ids.device).expand(B, T)
        cos, sin = self.rope(positions)  # (B, T, D) fp32
        x = self.embed(input_ids)
        cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # (B, 1, T, D): shared by heads
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, mask, cache, layer, start)
        return self.final_norm(x)

    def forward(self, input_ids, positions=None, mask=None, cache: KVCache | None = None, start: int = 0,
                last_only: bool = False):
        """Logits (B, T, V); with ``last_only`` just (B, 1, V), which is all prefill needs.

        ``mask`` (B, 1, T, S) bool (True = may attend) is needed only with padding; without it the
        attention is causal. With ``cache``, keys/values are written at [start, start+T).
        """
        h = self.hidden_states(input_ids, positions, mask, cache, start)
        if last_only:
            h = h[:, -1:]
        return self.lm_head(h)

    def decode_step(self, tokens, positions, mask=None, cache: KVCache = None, start: int = 0,
                    weights: list[DecodeWeights] | None = None):
        """Logits (B, V) for one new token per row: the generation engine's inner loop.

        The same arithmetic as ``forward`` on a (B, 1) input, arranged to launch fewer kernels,
        which is what a decode step of a small model costs: rows are (B, C) vectors, not (B, 1, C)
        sequences, so nothing is transposed; q, k and v come from one matrix product and gate and
        up from another (``decode_weights``); q and k are normalized and rotated together, RoPE in
        four kernels; attention always goes through the fused kernel (``set_attention`` chooses
        the implementation of ``forward``, the teaching path). tokens (B,), positions (B,) int; ``mask`` (B, 1, 1, start+1) bool or None;
        the new keys/values are written at cache position ``start``. ``weights`` is
        ``decode_weights()``, passed in by a caller that makes many steps.
        """
        weights = weights if weights is not None else self.decode_weights()

        def attend(layer, q, k, v):  # q (B, K, H//K, D); k, v (B, K, D)
            keys, values = cache.append_one(layer, k, v, start)  # (B, K, S, D)
            # The H // K query heads that share a key/value head go in as that head's H // K queries:
            # no copies of keys and values for grouped-query attention (twice as fast at batch 16 on CPU)
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)

        return self._decode_layers(tokens, positions, weights, attend)

    def decode_step_pending(self, tokens, positions, prefix_bias, cache: KVCache, start: int,
                            pending: list[tuple[list, list]], weights: list[DecodeWeights]):
        """``decode_step`` for a run of several steps inside one compiled graph (``generate``'s
        chunked greedy decoding): logits (B, V) for one new token per row.

        The keys/values of the steps of this run are not written to the cache yet: each layer keeps
        them in ``pending[layer]`` (two lists of (B, K, D)) and attention reads the cache's
        [0, start) as a view plus those, merged in one softmax. ``cache.write_pending`` stores them
        afterwards. Inside a compiled graph, writing the cache and then reading it back makes the
        compiler copy the keys and values it reads at every step; this way it reads them in place.
        ``prefix_bias`` (B, 1, 1, start) is 0 for a real key and -inf for padding, or None without padding.
        """
        scale = self.config.head_dim ** -0.5

        def attend(layer, q, k, v):
            dtype = q.dtype
            pending_keys, pending_values = pending[layer]
            pending_keys.append(k)
            pending_values.append(v)
            new_keys = torch.stack(pending_keys, dim=2)  # (B, K, n, D)
            new_values = torch.stack(pending_values, dim=2)
            old_keys, old_values = cache.prefix(layer, start)  # (B, K, start, D) views
            if q.dtype != torch.float32:  # in fp32 throughout, as the fused kernel computes bf16 attention
                q, old_keys, old_values, new_keys, new_values = (
                    t.float() for t in (q, old_keys, old_values, new_keys, new_values))
            old_scores = q @ old_keys.transpose(-1, -2)  # (B, K, H//K, start)
            if prefix_bias is not None:
                old_scores = old_scores + prefix_bias
            scores = torch.cat([old_scores, q @ new_keys.transpose(-1, -2)], dim=-1)
            probs = torch.softmax(scores * scale, dim=-1)  # (B, K, H//K, start+n)
            out = probs[..., :start] @ old_values + probs[..., start:] @ new_values
            return out.to(dtype)

        return self._decode_layers(tokens, positions, weights, attend)

    def _decode_layers(self, tokens, positions, weights, attend):
        """The body of the decode step; ``attend(layer, q, k, v)`` is its attention over the cache."""
        c = self.config
        B, H, K, D = tokens.shape[0], c.num_attention_heads, c.num_key_value_heads, c.head_dim
        x = self.embed(tokens)  # (B, C)
        cos, signed_sin = self.decode_rope(positions, x.dtype)  # (B, 1, D) each
        for layer, (block, w) in enumerate(zip(self.blocks, weights)):
            h = rms_norm(x, block.attn_norm.weight, block.attn_norm.eps)
            qkv = w.qkv_of(h).view(B, H + 2 * K, D)  # heads: H of q, K of k, K of v
            qk, v = qkv[:, : H + K], qkv[:, H + K:]
            if w.qk_norm is not None:  # Qwen3: q_norm's gain on the first H heads, k_norm's on the K others
                qk = rms_norm(qk, w.qk_norm, c.rms_norm_eps)
            qk = apply_rope_signed(qk, cos, signed_sin)
            out = attend(layer, qk[:, :H].view(B, K, H // K, D), qk[:, H:], v)  # (B, K, H//K, D)
            x = x + linear_one_step(out.reshape(B, H * D), block.attn.o_proj.weight)
            h = rms_norm(x, block.mlp_norm.weight, block.mlp_norm.eps)
            gate, up = w.gate_up_of(h)
            x = x + linear_one_step(F.silu(gate) * up, block.mlp.down_proj.weight)
        h = rms_norm(x, self.final_norm.weight, self.final_norm.eps)
        return linear_one_step(h, self.lm_head.weight)  # (B, V)

    def decode_weights(self) -> list[DecodeWeights]:
        """Per-layer weights of ``decode_step``, built from the parameters as they are now.

        Stacking q/k/v (and gate/up) copies those weights, so it is done only for models under
        ``FUSE_MAX_PARAMETERS``, where launches dominate; larger models are bound by reading
        their weights, and keep a single copy. The copies are made afresh for every generation
        call (a few milliseconds for the tiny model), never cached across calls: an optimizer may
        change the parameters in between without any trace (the fused AdamW kernel does not even
        bump their version counters), and a rollout must never run on stale weights.
        """
        fuse = self.num_parameters() <= FUSE_MAX_PARAMETERS
        with torch.no_grad():
            return [DecodeWeights.of(block, fuse) for block in self.blocks]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def padding_mask(key_valid: torch.Tensor, num_queries: int) -> torch.Tensor:
    """Causal mask that also hides padded keys: key_valid (B, S) bool -> (B, 1, T, S).

    The T queries are the last T of the S keys. A padded query may attend to itself, so that no
    softmax row is empty (an empty row gives NaN, which would leak into later layers' values).
    """
    S = key_valid.shape[1]
    T = num_queries
    causal = torch.ones(T, S, dtype=torch.bool, device=key_valid.device).tril(diagonal=S - T)
    mask = causal[None] & key_valid[:, None, :]
    own = torch.zeros(T, S, dtype=torch.bool, device=key_valid.device)
    own[torch.arange(T), torch.arange(S - T, S)] = True
    return (mask | own[None])[:, None]  # (B, 1, T, S)


def positions_from_padding(key_valid: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: 0 at each row's first real token. (B, S) bool -> (B, S) long."""
    return (key_valid.long().cumsum(dim=1) - 1).clamp(min=0)
