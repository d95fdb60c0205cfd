"""The generation engine shared by evaluation, scaling, refinement and RL rollouts.

Prompts of different lengths are left-padded into one batch, so that every row writes the same
cache position at each step. One prefill per prompt; with ``num_samples > 1`` the prompt's keys and
values are copied to its samples instead of being recomputed. Rows that finish are dropped from the
batch, so they stop costing compute.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from companion.model import KVCache, Qwen3Model, padding_mask, positions_from_padding


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    logprobs: list[float]  # log-prob of each generated token under the (temperature-scaled) model
    finish_reason: str  # "stop" (an EOS id or stop string) or "length"
    prompt_index: int = 0
    sample_index: int = 0
    prompt_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / max(1, len(self.logprobs))


@dataclass
class SamplingParams:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p (--top-p) must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k (--top-k) must be >= 0, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the nucleus of mass top_p. (B, V) -> (B, V).

    The nucleus is the smallest set of most likely tokens whose probability reaches top_p; the most
    likely token is always kept.
    """
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely tokens
        drop_sorted = mass_before >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None):
    """Pick the next token of each row: (B, V) logits -> tokens (B,), log-probs (B,).

    The log-prob is under the temperature-scaled distribution before top-k/top-p filtering, which
    is what a policy-gradient trainer recomputes.
    """
    logits = logits.float()
    if params.greedy:
        # max(dim).indices picks the same (first) maximum as argmax, and is faster on CPU (20 vs 51 us at 16 x 4096)
        tokens = logits.max(dim=-1).indices
        logprobs = torch.log_softmax(logits, dim=-1)
    else:
        scaled = logits / params.temperature
        logprobs = torch.log_softmax(scaled, dim=-1)
        probs = torch.softmax(filter_logits(scaled, params.top_k, params.top_p), dim=-1)
        tokens = _draw(probs, generator)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row by inverse-CDF sampling: (B, V) probabilities -> (B,) ids.

    Much faster than torch.multinomial over a 150k vocabulary. ``u`` is scaled by each row's total
    so that rounding can never push it past the last token, and ``right=True`` means a token of
    probability zero (outside the nucleus) is never chosen.
    """
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


def _left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    valid = torch.zeros((len(prompts), length), dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, length - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            valid[row, length - len(prompt):] = True
    return ids.to(device), valid.to(device)


class _StopStrings:
    """Finds stop strings in the decoded tail of a row (only used when stop strings are given)."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer = tokenizer
        self.stops = stops
        self.window = max(len(s) for s in stops) + 8

    def hit(self, tokens: list[int]) -> bool:
        tail = self.tokenizer.decode(tokens[-self.window:])
        return any(s in tail for s in self.stops)


@torch.inference_mode()
def generate_ids(
    model: Qwen3Model,
    prompts: list[list[int]],
    max_new_tokens: int,
    params: SamplingParams = SamplingParams(),
    eos_ids: tuple[int, ...] = (),
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    stop_strings: _StopStrings | None = None,
    min_new_tokens: int = 0,
    pad_id: int = 0,
    on_token=None,
    decode_step=None,
) -> list[tuple[list[int], list[float], str]]:
    """The engine on token ids. Returns (tokens, logprobs, finish_reason) per prompt and sample,
    prompt-major (prompt 0's samples first). EOS tokens are included in the output."""
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    device = model.device
    input_ids, valid = _left_pad(prompts, pad_id, device)
    B0, L = input_ids.shape
    total = L + max_new_tokens
    if total > model.config.max_position_embeddings:
        raise ValueError(f"prompt ({L}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                         f"{model.config.max_position_embeddings} positions")
    chunked = params.greedy and getattr(decode_step, "chunk", None) is not None
    overshoot = decode_step.chunk_size - 1 if chunked else 0  # a last chunk may run past max_new_tokens
    cache = KVCache(model.config, B0, total + overshoot, device=device, dtype=model.dtype)
    padded = not bool(valid.all())
    positions = positions_from_padding(valid)
    mask = padding_mask(valid, L) if padded else None
    logits = model(input_ids, positions, mask, cache, start=0, last_only=True)[:, -1]  # (B0, V)

    B = B0 * num_samples
    if num_samples > 1:  # share the prompt's prefill among its samples
        cache.repeat_rows(num_samples)
        logits = logits.repeat_interleave(num_samples, dim=0)
        valid = valid.repeat_interleave(num_samples, dim=0)
    # Key validity over the whole cache: padding is invalid, generated positions become valid.
    key_valid = torch.cat([valid, torch.ones(B, max_new_tokens, dtype=torch.bool, device=device)], dim=1)
    pad_lengths = (~valid).sum(dim=1)  # (B,)

    out_tokens = torch.zeros(B, max_new_tokens, dtype=torch.long)
    out_logprobs = torch.zeros(B, max_new_tokens, dtype=torch.float32)
    lengths = torch.full((B,), max_new_tokens, dtype=torch.long)  # lowered as rows finish
    finish = ["length"] * B
    rows = torch.arange(B)  # original row of each active batch row
    every_row = True  # rows is still arange(B): plain column writes instead of scatters
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=device)
    eos_cpu = eos.cpu()
    weights = model.decode_weights()  # stacked once per call (not per step), from the current parameters
    step_fn = decode_step if decode_step is not None else model.decode_step
    if chunked:
        eos_block = eos if len(eos) else torch.tensor([0], device=device)  # index_fill needs an index
        never_blocked = torch.zeros(decode_step.chunk_size, dtype=torch.bool, device=device)

    def block_eos(step: int) -> bool:
        return step < min_new_tokens and len(eos) > 0

    if block_eos(0):
        logits[:, eos] = float("-inf")
    tokens, logprobs = sample_next(logits, params, generator)
    new_tokens, new_logprobs = tokens[:, None], logprobs[:, None]  # (B, n): this round's tokens
    step = 0  # index of the first token of this round
    while True:
        # Book-keeping of one round of n tokens per active row, vectorized over the round: a row that
        # stops at its k-th token keeps none of the later ones (chunked decoding computes them anyway).
        n = min(new_tokens.shape[1], max_new_tokens - step)
        tokens_cpu, logprobs_cpu = new_tokens[:, :n].cpu(), new_logprobs[:, :n].cpu()
        where = slice(None) if every_row else rows
        out_tokens[where, step:step + n], out_logprobs[where, step:step + n] = tokens_cpu, logprobs_cpu
        hit = torch.isin(tokens_cpu, eos_cpu)  # (b, n); all False without EOS ids
        if stop_strings is not None:
            for i, row in enumerate(rows.tolist()):
                for k in range(n):  # up to the row's first stop, EOS or string
                    if hit[i, k] or stop_strings.hit(out_tokens[row, : step + k + 1].tolist()):
                        hit[i, k] = True
                        break
        stopped = hit.any(dim=1)
        any_stopped = bool(stopped.any())
        if any_stopped or on_token is not None:
            last = torch.where(stopped, hit.int().argmax(dim=1), n - 1)  # each row's last kept token
        if on_token is not None:
            for k in range(n):
                live = last >= k
                if live.any():
                    on_token(rows[live].tolist(), tokens_cpu[live, k].tolist())
        if any_stopped:
            for i in stopped.nonzero().squeeze(-1).tolist():
                finish[int(rows[i])] = "stop"
                lengths[rows[i]] = step + int(last[i]) + 1
        step += n
        if step >= max_new_tokens or bool(stopped.all()):
            break
        if any_stopped:
            keep = (~stopped).nonzero().squeeze(-1)
            rows, every_row = rows[keep], False
            keep = keep.to(device)
            cache.select_rows(keep)
            new_tokens = new_tokens[keep]
            key_valid, pad_lengths = key_valid[keep], pad_lengths[keep]
        position = L + step - 1  # cache slot of the last token sampled
        step_positions = position - pad_lengths  # (B,)
        if chunked:
            n = decode_step.chunk_size
            bias = None
            if padded:
                bias = torch.zeros(key_valid.shape[0], 1, 1, position, device=device, dtype=model.dtype)
                bias.masked_fill_(~key_valid[:, None, None, :position], float("-inf"))
            blocked = never_blocked if step >= min_new_tokens else torch.tensor(
                [block_eos(step + k) for k in range(n)], device=device)
            new_tokens, new_logprobs = decode_step.chunk(model, new_tokens[:, -1], step_positions, bias, cache,
                                                         position, weights, n, eos_block, blocked)
        else:
            step_mask = key_valid[:, None, None, : position + 1] if padded else None
            logits = step_fn(new_tokens[:, -1], step_positions, step_mask, cache, start=position, weights=weights)
            if block_eos(step):
                logits[:, eos] = float("-inf")
            tokens, logprobs = sample_next(logits, params, generator)
            new_tokens, new_logprobs = tokens[:, None], logprobs[:, None]

    results = []
    for row in range(B):
        n = int(lengths[row])
        results.append((out_tokens[row, :n].tolist(), out_logprobs[row, :n].tolist(), finish[row]))
    return results


GREEDY = SamplingParams()


def greedy_decode_chunk(model: Qwen3Model, tokens, positions, prefix_bias, cache: KVCache, start: int, weights,
                        steps: int, eos, blocked):
    """``steps`` greedy decode steps in a row, for compiling as one graph: tokens (B,) is the last
    token chosen, at cache slot ``start`` and position ``positions`` (B,). Returns the next
    ``steps`` tokens (B, steps) and their log-probs (B, steps); ``blocked[k]`` bans the ``eos`` ids
    at step k (``min_new_tokens``). The engine checks for stops only after the whole run, so a row
    that ends inside it costs the rest of the run: at most ``steps - 1`` wasted tokens."""
    pending = [([], []) for _ in weights]
    chosen, logprobs = [], []
    for k in range(steps):
        logits = model.decode_step_pending(tokens, positions + k, prefix_bias, cache, start, pending, weights)
        logits = torch.where(blocked[k], logits.index_fill(-1, eos, float("-inf")), logits)
        tokens, logprob = sample_next(logits, GREEDY)
        chosen.append(tokens)
        logprobs.append(logprob)
    cache.write_pending(pending, start)
    return torch.stack(chosen, dim=1), torch.stack(logprobs, dim=1)


CHUNK_MAX_PARAMETERS = 100_000_000  # chunked greedy decoding pays off only where per-step overhead dominates
DEFAULT_CHUNK_SIZE = 4


class CompiledDecoder:
    """The engine's compiled decode functions: called like ``model.decode_step`` (compiled), and,
    with ``chunk_size`` > 1, ``chunk``: ``greedy_decode_chunk`` of ``chunk_size`` steps compiled as
    one graph, which greedy generation uses instead. On CPU a compiled call has a fixed cost
    (guards, gathering the inputs, launching the kernels) that is a third of a tiny model's step;
    one call per ``chunk_size`` tokens pays it once for all of them. Sampling keeps the one-step
    function. ``compile=False`` runs the same functions eagerly (for tests)."""

    def __init__(self, model: Qwen3Model, chunk_size: int | None = None, compile: bool = True):
        if chunk_size is None:
            chunk_size = DEFAULT_CHUNK_SIZE if model.num_parameters() <= CHUNK_MAX_PARAMETERS else 1
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.step = torch.compile(model.decode_step, dynamic=True) if compile else model.decode_step
        self.chunk = None
        if chunk_size > 1:
            # Inductor's C++ launcher: for the chunk's 4x longer graph it saves much of what launching
            # its kernels from Python costs (while writing this, batch 1 went from 2.98x to 3.31x
            # transformers' speed on a 2-core CPU; the one-step graph gained nothing). Tried on CPU only.
            options = {"cpp_wrapper": True} if model.device.type == "cpu" else None
            self.chunk = torch.compile(greedy_decode_chunk, dynamic=True, options=options) if compile \
                else greedy_decode_chunk

    def __call__(self, *args, **kwargs):
        return self.step(*args, **kwargs)


def compiled_decode_step(model: Qwen3Model, chunk_size: int | None = None) -> CompiledDecoder:
    """``torch.compile`` of the decode step (prefill stays eager), for ``generate_ids(decode_step=...)``.
    Worth it where the per-token overhead of many small kernels dominates; compiling takes tens of
    seconds on CPU (one to two minutes more for the 4-step greedy chunk of a small model)."""
    return CompiledDecoder(model, chunk_size)


def generate(
    model: Qwen3Model,
    tokenizer,
    prompts: str | list[str],
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: list[str] | None = None,
    num_samples: int = 1,
    batch_size: int | None = None,
    min_new_tokens: int = 0,
    progress: bool = False,
    stream=None,
    compile: bool = False,
) -> list[GenerationResult]:
    """Generate a reply for each prompt (text already formatted, e.g. by a chat template).

    Returns one ``GenerationResult`` per prompt, or ``num_samples`` per prompt, prompt-major.
    ``temperature=0`` is greedy. ``seed`` makes sampling reproducible. ``stop`` lists extra stop
    strings; the tokenizer's EOS ids always stop. ``stream(text_delta)`` is called as text arrives
    (single prompt and sample only). ``batch_size`` caps the rows generated together.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    params = SamplingParams(temperature, top_k, top_p)
    if stream is not None and (len(prompts) != 1 or num_samples != 1):
        raise ValueError("streaming works with one prompt and one sample")
    encoded = [tokenizer.encode(p) for p in prompts]
    generator = None
    if seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    eos_ids = tuple(getattr(tokenizer, "eos_token_ids", None) or [tokenizer.eos_token_id])
    stops = _StopStrings(tokenizer, stop) if stop else None
    decode_step = compiled_decode_step(model) if compile else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    prompts_per_batch = max(1, (batch_size or len(encoded) * num_samples) // num_samples)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths pad less
    results: list[GenerationResult | None] = [None] * (len(encoded) * num_samples)
    on_token = _Streamer(tokenizer, stream) if stream is not None else None
    bar = tqdm(total=len(encoded) * num_samples, desc="generate", unit="seq", disable=not progress)
    for start in range(0, len(order), prompts_per_batch):
        chunk = order[start:start + prompts_per_batch]
        outputs = generate_ids(model, [encoded[i] for i in chunk], max_new_tokens, params, eos_ids, num_samples,
                               generator, stops, min_new_tokens, pad_id, on_token, decode_step)
        for j, (tokens, logprobs, reason) in enumerate(outputs):
            prompt_index, sample_index = chunk[j // num_samples], j % num_samples
            text = tokenizer.decode(_strip_eos(tokens, eos_ids), skip_special_tokens=False)
            if stop and reason == "stop":
                text = _cut_at_stop(text, stop)
            results[prompt_index * num_samples + sample_index] = GenerationResult(
                text, tokens, logprobs, reason, prompt_index, sample_index, len(encoded[prompt_index]))
        bar.update(len(outputs))
    bar.close()
    return results


def _strip_eos(tokens: list[int], eos_ids) -> list[int]:
    return tokens[:-1] if tokens and tokens[-1] in eos_ids else tokens


def _cut_at_stop(text: str, stops: list[str]) -> str:
    cuts = [text.find(s) for s in stops if s in text]
    return text[: min(cuts)] if cuts else text


class _Streamer:
    """Turns tokens into text deltas; holds back bytes that do not yet form a whole character."""

    def __init__(self, tokenizer, callback):
        self.tokenizer, self.callback = tokenizer, callback
        self.tokens: list[int] = []
        self.printed = 0
        self.eos = set(getattr(tokenizer, "eos_token_ids", None) or [tokenizer.eos_token_id])

    def __call__(self, rows, tokens):
        if tokens[0] in self.eos:
            return
        self.tokens.append(tokens[0])
        text = self.tokenizer.decode(self.tokens)
        if text.endswith("\ufffd"):
            return
        self.callback(text[self.printed:])
        self.printed = len(text)


# ---- command line --------------------------------------------------------------------------------

def register_cli(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate text from a prompt, streaming the reply",
                              description="Generate a reply with a Qwen3-family model; streams text and ends with tokens per second.")
    p.add_argument("--model", default=None, help="model folder or hub repo id (default: the shipped tiny model)")
    p.add_argument("--prompt", required=True, help="the prompt text (the user message with --chat)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    thinking = p.add_mutually_exclusive_group()
    thinking.add_argument("--thinking", dest="thinking", action="store_true", default=True,
                          help="chat with thinking mode on (default)")
    thinking.add_argument("--no-thinking", dest="thinking", action="store_false", help="chat with thinking mode off")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"], help="default: fp32 on CPU, bf16 elsewhere")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step (greedy decoding of a small model: four steps per compiled call)")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    from companion.checkpoint import load_model

    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    prompt = args.prompt
    if args.chat:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               enable_thinking=args.thinking)
    started = time.perf_counter()
    [result] = generate(model, tokenizer, prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                        top_k=args.top_k, top_p=args.top_p, seed=args.seed, compile=args.compile,
                        stream=lambda text: print(text, end="", flush=True))
    seconds = time.perf_counter() - started
    print()
    print(f"[{result.num_tokens} tokens in {seconds:.2f} s: {result.num_tokens / seconds:.1f} tokens/s, "
          f"finish: {result.finish_reason}]")
    return 0
