"""One comparison, start to finish, as an ``Outcome``: shared by the caller's process (fast path)
and the worker process (SymPy path), so both give the same answers for the same input."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .compare import FAST, NeedsSymbolic
from .normalize import normalize
from .structure import StructureError, Value, parse_structure

MAX_ANSWER_CHARS = 1000  # a final answer longer than this is not an answer (and not worth SymPy)


@dataclass(frozen=True)
class Outcome:
    """``equal``; ``reason``: "equal", "not equal" or why it failed; ``method``: which path decided."""

    equal: bool
    reason: str
    method: str


@lru_cache(maxsize=65536)
def normalized(text: str) -> str:
    return normalize(text)


@lru_cache(maxsize=65536)
def structure_of(text: str) -> Value | StructureError:
    """The cached structure of a normalized answer, or the error explaining why it has none."""
    try:
        return parse_structure(text)
    except StructureError as error:
        return error
    except RecursionError:
        return StructureError("answer nested too deeply")


def _verdict(equal: bool, method: str) -> Outcome:
    return Outcome(equal, "equal" if equal else "not equal", method)


def fast_outcome(answer: str, gold: str) -> Outcome | None:
    """Decide a normalized pair without SymPy, or return None when SymPy is needed."""
    if answer == gold:
        return _verdict(True, "string")
    if not answer:
        return Outcome(False, "empty answer", "string")
    if len(answer) > MAX_ANSWER_CHARS:
        return Outcome(False, f"answer too long ({len(answer)} characters)", "string")
    answer_value, gold_value = structure_of(answer), structure_of(gold)
    for value, side in ((answer_value, "answer"), (gold_value, "gold")):
        if isinstance(value, StructureError):
            return Outcome(False, f"parse error ({side}): {value}", "structure")
    try:
        return _verdict(FAST.same(answer_value, gold_value), "fast")
    except NeedsSymbolic:
        return None
    except (StructureError, RecursionError) as error:
        return Outcome(False, f"parse error: {error}", "structure")


def symbolic_outcome(answer: str, gold: str) -> Outcome:
    """The full comparison with SymPy. Meant to run in the worker process (it may be slow)."""
    from .latex import LatexError, TooLarge
    from .symbolic import SYMBOLIC

    decided = fast_outcome(answer, gold)
    if decided is not None:
        return decided
    try:
        return _verdict(SYMBOLIC.same(structure_of(answer), structure_of(gold)), "symbolic")
    except TooLarge as error:
        return Outcome(False, f"too large: {error}", "symbolic")
    except (LatexError, StructureError) as error:
        return Outcome(False, f"parse error: {error}", "symbolic")
    except RecursionError:
        return Outcome(False, "too large: nested too deeply", "symbolic")
    except (ArithmeticError, TypeError, ValueError, AttributeError) as error:
        return Outcome(False, f"sympy error: {type(error).__name__}", "symbolic")
