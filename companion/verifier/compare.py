"""Compare two answer structures. Leaves are compared as numbers here; anything that needs
algebra raises ``NeedsSymbolic`` and the caller retries the whole pair with ``SymbolicComparer``
(in ``symbolic.py``) inside a time-limited worker process.

Policies (see also ``normalize.py`` and ``numeric.py``):

- tuples and points compare in order; sets and bare solution lists in any order;
- an interval's brackets matter: ``(1, 2]`` is not ``[1, 2]``; ``x > 3`` equals ``(3, \\infty)``;
- ``x = 3`` equals ``3`` (an assignment to one variable is its value), in either direction;
- an answer written as a derivation (``2 \\times 3 = 6``, ``a+b = -1+5 = 4``) answers with its
  last part, unless the gold itself is an equation;
- an answer list that repeats one value (``0.5 or 1/2``) is that value; a list of different
  values never equals a single gold value;
- equations are equal when one is a non-zero multiple of the other (``y = 2x+1`` ~ ``2x+1 = y``);
- text compares case-insensitively, ignoring articles and plural ``s``;
- multiple-choice letters ignore parentheses: ``(B)`` == ``B``;
- ``1011_2`` compares digits and base; a bare ``1011`` matches it (the base was asked for);
- a percent may be read as itself or divided by 100 (``25%`` == 25 == 0.25 as a percent).
"""
from __future__ import annotations

import re
from functools import lru_cache

from .numeric import Number, numbers_equal, parse_number, percent_variants
from .structure import (BaseNumber, Choice, Interval, Matrix, Relation, Scalar, Sequence, SetOf,
                        Text, Union, Value, flatten_sets, parse_structure)


class NeedsSymbolic(Exception):
    """The fast path cannot decide this pair without SymPy."""


_ASSIGNABLE = re.compile(
    r"(?:[A-Za-z](?:_\{?\w+\}?|')?(?:\([^()]*\))?|\\[A-Za-z]+(?:_\{?\w+\}?)?|\([A-Za-z](?:,[A-Za-z])*\))")
_EMPTY_WORDS = frozenset({"no solution", "no solutions", "none", "empty set", "no real solution",
                          "no real solutions", "there are no solution", "no such number"})
_LETTER_OUTSIDE_COMMANDS = re.compile(r"[A-Za-z]")
_COMMANDS = re.compile(r"\\[A-Za-z]+")
_CONSTANT_COMMANDS = {"\\frac", "\\sqrt", "\\pi", "\\infty", "\\cdot", "\\times", "\\div"}


@lru_cache(maxsize=65536)
def cached_number(text: str) -> Number | None:
    return parse_number(text)


def _canonical(text: str) -> str:
    """Cheap spelling-insensitive form for string equality: no braces around one token, one
    multiplication sign."""
    text = re.sub(r"([\^_])\{(\w)\}", r"\1\2", text)
    return text.replace("\\cdot", "*").replace("\\times", "*")


def _is_constant(text: str) -> bool:
    """No variables: only digits, operators and constant commands (used to read ``x > 3`` as an
    interval)."""
    commands = set(_COMMANDS.findall(text))
    if not commands <= _CONSTANT_COMMANDS:
        return False
    return not _LETTER_OUTSIDE_COMMANDS.search(_COMMANDS.sub("", text))


def _text_key(words: str) -> str:
    kept = [w for w in words.split() if w not in ("a", "an", "the")]
    return " ".join(w[:-1] if w.endswith("s") and len(w) > 3 else w for w in kept)


def _is_infinity(text: str) -> int:
    return {"\\infty": 1, "-\\infty": -1}.get(text, 0)


def _assignment(value: Value) -> tuple[str, Value] | None:
    """``x = 3`` → ("x", 3); ``2x+1 = y`` → ("y", 2x+1); a chain ``x = a = 5`` → ("x", 5)."""
    if not isinstance(value, Relation) or set(value.ops) != {"="}:
        return None
    parts = value.parts
    if _ASSIGNABLE.fullmatch(parts[0]):
        return parts[0], parse_structure(parts[-1], 1)
    if len(parts) == 2 and _ASSIGNABLE.fullmatch(parts[1]):
        return parts[1], parse_structure(parts[0], 1)
    return None


def _final_value(value: Value) -> Value | None:
    """An answer written as a derivation, ``a+b = -1+5 = 4`` or ``x \\ge \\frac{8+3}{2} = \\frac{11}{2}``,
    answers with its last part. Used for answers only, against a gold that is not a relation."""
    if not isinstance(value, Relation) or value.ops[-1] != "=":
        return None
    return parse_structure(value.parts[-1], 1)


def _as_interval(value: Value) -> Interval | None:
    """An interval from ``(a, b]``, ``x > 3``, ``-1 \\le x < 2`` (a single variable)."""
    if isinstance(value, Interval):
        return value
    if isinstance(value, Sequence) and len(value.items) == 2 and not value.bare:
        low, high = value.items
        if isinstance(low, Scalar) and isinstance(high, Scalar):
            return Interval(low, high, value.left == "[", value.right == "]")
    if isinstance(value, Relation):
        return _relation_interval(value)
    return None


def _relation_interval(relation: Relation) -> Interval | None:
    parts, ops = relation.parts, relation.ops
    if not set(ops) <= {"<", "<=", ">", ">="}:
        return None
    if len(ops) == 2 and (ops[0][0] == ops[1][0]) and _ASSIGNABLE.fullmatch(parts[1]):
        low, high = (parts[0], parts[2]) if ops[0][0] == "<" else (parts[2], parts[0])
        low_closed, high_closed = ((ops[0], ops[1]) if ops[0][0] == "<" else (ops[1], ops[0]))
        if _is_constant(low) and _is_constant(high):
            return Interval(Scalar(low), Scalar(high), "=" in low_closed, "=" in high_closed)
        return None
    if len(ops) != 1:
        return None
    left, right, op = parts[0], parts[1], ops[0]
    if _ASSIGNABLE.fullmatch(right) and not _ASSIGNABLE.fullmatch(left):
        left, right, op = right, left, {"<": ">", ">": "<", "<=": ">=", ">=": "<="}[op]
    if not (_ASSIGNABLE.fullmatch(left) and _is_constant(right)):
        return None
    closed = "=" in op
    if op[0] == "<":
        return Interval(Scalar("-\\infty"), Scalar(right), False, closed)
    return Interval(Scalar(right), Scalar("\\infty"), closed, False)


class Comparer:
    """Structural comparison with number-only leaves; subclasses add SymPy."""

    # ----------------------------------------------------------------- leaves
    def scalars_equal(self, a: str, b: str) -> bool:
        decided = self.fast_scalars_equal(a, b)
        if decided is not None:
            return decided
        return self.symbolic_scalars_equal(a, b)

    def fast_scalars_equal(self, a: str, b: str) -> bool | None:
        """True/False when strings or plain numbers decide it, else None."""
        if a == b or _canonical(a) == _canonical(b):
            return True
        if _is_infinity(a) or _is_infinity(b):
            return _is_infinity(a) == _is_infinity(b)
        pairs = [(x, y) for x in percent_variants(a) for y in percent_variants(b)]
        numbers = [(cached_number(x[0]), cached_number(y[0]), x[1], y[1]) for x, y in pairs]
        if all(na is not None and nb is not None for na, nb, _, _ in numbers):
            return any(numbers_equal(Number(na.value * sa, na.exact), Number(nb.value * sb, nb.exact))
                       for na, nb, sa, sb in numbers)
        return None

    def symbolic_scalars_equal(self, a: str, b: str) -> bool:
        raise NeedsSymbolic(f"{a!r} vs {b!r}")

    def relations_equal(self, a: Relation, b: Relation) -> bool:
        """Equations or inequalities that are not plain assignments or intervals."""
        if [_canonical(p) for p in a.parts] == [_canonical(p) for p in b.parts] and a.ops == b.ops:
            return True
        raise NeedsSymbolic("relations")

    # ----------------------------------------------------------------- structures
    def same(self, a: Value, b: Value) -> bool:
        """Is answer structure ``a`` equivalent to gold structure ``b``?"""
        if a == b:
            return True
        assigned_a, assigned_b = _assignment(a), _assignment(b)
        if assigned_a and assigned_b and assigned_a[0] == assigned_b[0]:
            return self.same(assigned_a[1], assigned_b[1])
        if assigned_a and not isinstance(b, Relation):
            return self.same(assigned_a[1], b)
        final = _final_value(a)
        if final is not None and not isinstance(b, Relation):
            return self.same(final, b)
        if assigned_b and not isinstance(a, Relation):
            return self.same(a, assigned_b[1])
        return self._dispatch(a, b)

    def _dispatch(self, a: Value, b: Value) -> bool:
        if isinstance(a, Scalar) and isinstance(b, Scalar):
            return self.scalars_equal(a.text, b.text)
        if isinstance(a, Sequence) and a.bare and not isinstance(b, (Sequence, SetOf, Matrix)):
            return all(self.same(item, b) for item in a.items)  # "0.5 or 1/2" repeats one answer
        for left, right in ((a, b), (b, a)):
            handled = self._special(left, right)
            if handled is not None:
                return handled
        if isinstance(a, Relation) and isinstance(b, Relation):
            return self._relations(a, b)
        if _interval_like(a) and _interval_like(b):
            return self._intervals(a, b)
        if isinstance(a, (Sequence, SetOf, Matrix)) and isinstance(b, (Sequence, SetOf, Matrix)):
            return self._collections(a, b)
        return False

    def _special(self, a: Value, b: Value) -> bool | None:
        """Pairs involving text, letters, bases and one-element sets."""
        if isinstance(a, Text):
            if isinstance(b, Text):
                return _text_key(a.words) == _text_key(b.words)
            if isinstance(b, SetOf) and not b.items:
                return a.words in _EMPTY_WORDS
            return isinstance(b, Scalar) and a.words.replace(" ", "") == b.text.lower().replace(" ", "")
        if isinstance(a, Choice):
            if isinstance(b, Choice):
                return a.letter == b.letter
            return isinstance(b, Scalar) and b.text.upper() == a.letter
        if isinstance(a, BaseNumber):
            if isinstance(b, BaseNumber):
                return a.digits == b.digits and a.base == b.base
            return isinstance(b, Scalar) and b.text.upper().lstrip("0") == a.digits
        if isinstance(a, SetOf) and len(a.items) == 1 and not isinstance(b, (SetOf, Sequence)):
            return self.same(a.items[0], b)
        return None

    def _relations(self, a: Relation, b: Relation) -> bool:
        interval_a, interval_b = _relation_interval(a), _relation_interval(b)
        if interval_a and interval_b:
            return self._intervals(interval_a, interval_b)
        if (interval_a is None) != (interval_b is None) and "=" in a.ops + b.ops:
            return False
        return self.relations_equal(a, b)

    def _intervals(self, a: Value, b: Value) -> bool:
        parts_a = a.parts if isinstance(a, Union) else (a,)
        parts_b = b.parts if isinstance(b, Union) else (b,)
        intervals_a = [_as_interval(p) for p in parts_a]
        intervals_b = [_as_interval(p) for p in parts_b]
        if None in intervals_a or None in intervals_b:
            if isinstance(a, Union) or isinstance(b, Union):
                return False
            return self._collections(a, b) if isinstance(a, Sequence) and isinstance(b, Sequence) else False
        return self._match_unordered(intervals_a, intervals_b, self._interval_equal)

    def _interval_equal(self, a: Interval, b: Interval) -> bool:
        return (a.left_closed == b.left_closed and a.right_closed == b.right_closed
                and self.scalars_equal(a.low.text, b.low.text) and self.scalars_equal(a.high.text, b.high.text))

    def _collections(self, a: Value, b: Value) -> bool:
        if isinstance(a, Matrix) or isinstance(b, Matrix):
            return self._matrices(a, b)
        items_a, items_b = flatten_sets(a.items), flatten_sets(b.items)
        ordered = isinstance(a, Sequence) and isinstance(b, Sequence) and not (a.bare and b.bare)
        if isinstance(a, SetOf) or isinstance(b, SetOf):
            other = b if isinstance(a, SetOf) else a
            if isinstance(other, Sequence) and not other.bare:
                return False
            ordered = False
        if ordered and not a.bare and not b.bare and len(a.items) == 2 and (a.left, a.right) != (b.left, b.right):
            return False
        if ordered and (a.bare or b.bare):
            bracketed = b if a.bare else a
            if len(bracketed.items) == 2 and (bracketed.left, bracketed.right) != ("(", ")"):
                return False
        if len(items_a) != len(items_b):
            return False
        if ordered:
            return all(self.same(x, y) for x, y in zip(items_a, items_b))
        return self._match_unordered(list(items_a), list(items_b), self.same)

    def _matrices(self, a: Value, b: Value) -> bool:
        rows_a, rows_b = _matrix_rows(a), _matrix_rows(b)
        if rows_a is None or rows_b is None:
            return False
        if len(rows_a) != len(rows_b) or any(len(x) != len(y) for x, y in zip(rows_a, rows_b)):
            flat_a, flat_b = _vector(rows_a), _vector(rows_b)
            if flat_a is None or flat_b is None or len(flat_a) != len(flat_b):
                return False
            if not (isinstance(a, Sequence) or isinstance(b, Sequence)):
                return False
            rows_a, rows_b = [flat_a], [flat_b]
        return all(self.same(x, y) for row_a, row_b in zip(rows_a, rows_b) for x, y in zip(row_a, row_b))

    def _match_unordered(self, items_a: list, items_b: list, equal) -> bool:
        if len(items_a) != len(items_b):
            return False
        unused = list(items_b)
        for item in items_a:
            for k, candidate in enumerate(unused):
                if equal(item, candidate):
                    del unused[k]
                    break
            else:
                return False
        return True


def _interval_like(value: Value) -> bool:
    if isinstance(value, Union):
        return True
    return _as_interval(value) is not None


def _matrix_rows(value: Value) -> list[list] | None:
    if isinstance(value, Matrix):
        return [list(row) for row in value.rows]
    if isinstance(value, Sequence) and not value.bare:
        return [list(value.items)]
    return None


def _vector(rows: list[list]) -> list | None:
    """A single row or a single column as a flat list."""
    if len(rows) == 1:
        return rows[0]
    if all(len(row) == 1 for row in rows):
        return [row[0] for row in rows]
    return None


FAST = Comparer()


def fast_equal(answer: Value, gold: Value) -> bool:
    """Decide without SymPy, or raise ``NeedsSymbolic``."""
    return FAST.same(answer, gold)

