"""The math answer verifier: extract the final answer from a response, then decide whether it
equals the gold answer.

    >>> from companion.verifier import grade, extract_answer, equivalent
    >>> extract_answer("... so the total is \\\\boxed{\\\\frac{7}{3}}.")
    '\\\\frac{7}{3}'
    >>> equivalent("2\\\\frac{1}{3}", "\\\\frac{7}{3}")
    True
    >>> grade("The answer is 0.33", "\\\\frac{1}{3}")
    False

Pipeline: ``extract`` → ``normalize`` (one canonical spelling) → ``structure`` (tuple, set,
interval, equation ...) → compare. Plain numbers, strings and structures of numbers are decided
in this process in microseconds; anything that needs algebra goes to a SymPy worker process with a
hard time limit (``sandbox``), so no input can hang or crash the caller.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from . import sandbox
from .core import MAX_ANSWER_CHARS, Outcome, fast_outcome, normalized
from .extract import extract_answer
from .normalize import PLAIN_NUMBER
from .normalize import normalize as normalize_answer
from .numeric import numbers_equal, parse_number

DEFAULT_TIMEOUT = 5.0
_MAX_INPUT_CHARS = 5 * MAX_ANSWER_CHARS  # longer raw answers are refused before normalization


@dataclass(frozen=True)
class GradeResult:
    """The verdict on one response, with what was extracted and why it passed or failed.

    ``reason`` is "equal", "not equal", "no answer found", "timeout", or a failure such as
    "parse error: ...", "too large: ...", "answer too long (...)", "worker crashed".
    ``method`` says which stage decided: "string", "fast" (numbers and structures), "structure",
    "symbolic" (SymPy in the worker) or "" when nothing was compared.
    """

    correct: bool
    extracted: str | None
    gold: str
    reason: str
    method: str = ""
    seconds: float = 0.0


def compare(answer: str | None, gold: str, timeout: float = DEFAULT_TIMEOUT) -> Outcome:
    """``equivalent`` with the reason and the deciding method."""
    if answer is None:
        return Outcome(False, "no answer found", "")
    if not isinstance(answer, str) or not isinstance(gold, str):
        raise TypeError(f"answers must be strings, got {type(answer).__name__} and {type(gold).__name__}")
    if answer == gold:
        return Outcome(True, "equal", "string")
    if PLAIN_NUMBER.fullmatch(answer) and PLAIN_NUMBER.fullmatch(gold):
        decided = _numbers_outcome(answer, gold)
        if decided is not None:
            return decided
    if len(answer) > _MAX_INPUT_CHARS:
        return Outcome(False, f"answer too long ({len(answer)} characters)", "string")
    try:
        answer_norm, gold_norm = normalized(answer), normalized(gold)
        if not gold_norm:
            return Outcome(False, "empty gold answer", "string")
        decided = fast_outcome(answer_norm, gold_norm)
    except RecursionError:
        return Outcome(False, "too large: nested too deeply", "structure")
    if decided is not None:
        return decided
    return _symbolic(answer_norm, gold_norm, timeout)


def _numbers_outcome(answer: str, gold: str) -> Outcome | None:
    """Two plain decimal numbers: the RL hot path, no normalization needed (None: too many digits)."""
    a, b = parse_number(answer), parse_number(gold)
    if a is None or b is None:
        return None
    equal = numbers_equal(a, b)
    return Outcome(equal, "equal" if equal else "not equal", "fast")


def _symbolic(answer: str, gold: str, timeout: float) -> Outcome:
    cached = _SYMBOLIC_CACHE.get((answer, gold))
    if cached is not None:
        return cached
    try:
        reply = sandbox.pool().run({"op": "compare", "answer": answer, "gold": gold}, timeout)
    except sandbox.WorkerTimeout:
        return Outcome(False, "timeout", "symbolic")
    except sandbox.WorkerCrashed as error:
        return Outcome(False, f"worker crashed: {error}", "symbolic")
    outcome = Outcome(bool(reply["equal"]), str(reply["reason"]), str(reply["method"]))
    if len(_SYMBOLIC_CACHE) > 100_000:
        _SYMBOLIC_CACHE.clear()
    _SYMBOLIC_CACHE[(answer, gold)] = outcome
    return outcome


_SYMBOLIC_CACHE: dict[tuple[str, str], Outcome] = {}


def equivalent(answer: str | None, gold: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Is ``answer`` mathematically the same final answer as ``gold``? False on timeout."""
    return compare(answer, gold, timeout).equal


def grade_detailed(response: str | None, gold: str, strict: bool = False,
                   timeout: float = DEFAULT_TIMEOUT) -> GradeResult:
    """Extract the final answer from ``response`` and compare it with ``gold``.

    ``strict=True`` (for RL rewards) only accepts a final ``\\boxed{}``, after ``</think>`` when the
    response has a think block."""
    started = time.perf_counter()
    extracted = extract_answer(response, strict=strict)
    outcome = compare(extracted, gold, timeout)
    return GradeResult(outcome.equal, extracted, gold, outcome.reason, outcome.method,
                       time.perf_counter() - started)


def grade(response: str | None, gold: str, strict: bool = False, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """True when the final answer in ``response`` equals ``gold``."""
    return compare(extract_answer(response, strict=strict), gold, timeout).equal


def warm_up() -> None:
    """Start a SymPy worker now (about a second) instead of at the first symbolic comparison."""
    sandbox.pool().warm_up()


def shutdown() -> None:
    """Stop the worker processes (they restart on demand)."""
    sandbox.shutdown()


__all__ = ["DEFAULT_TIMEOUT", "GradeResult", "MAX_ANSWER_CHARS", "Outcome", "compare", "equivalent",
           "extract_answer", "grade", "grade_detailed", "normalize_answer", "shutdown", "warm_up"]
