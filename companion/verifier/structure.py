"""Split a normalized answer into its shape: a scalar, a tuple, an interval, a set, a matrix ...

The shape decides how two answers compare: tuples in order, sets in any order, intervals with
their brackets, equations up to rearrangement. The leaves are ``Scalar`` strings, compared later
as numbers (fast) or with SymPy. All of this is pure string work on a bounded input.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DEPTH = 12  # nesting of structures (a tuple of sets of tuples ...); deeper is refused


class StructureError(ValueError):
    """The answer's structure is malformed or too deep to be a real answer."""


@dataclass(frozen=True)
class Scalar:
    text: str


@dataclass(frozen=True)
class Text:
    words: str


@dataclass(frozen=True)
class Choice:
    letter: str


@dataclass(frozen=True)
class BaseNumber:
    digits: str
    base: int


@dataclass(frozen=True)
class Sequence:
    """``(a, b)``, ``[a, b)`` or a bare ``a, b`` (``left == right == ""``)."""

    items: tuple
    left: str
    right: str

    @property
    def bare(self) -> bool:
        return self.left == ""


@dataclass(frozen=True)
class SetOf:
    """Unordered: ``\\{a, b\\}``, and the two values of ``a \\pm b``."""

    items: tuple


@dataclass(frozen=True)
class Interval:
    low: Scalar
    high: Scalar
    left_closed: bool
    right_closed: bool


@dataclass(frozen=True)
class Union:
    parts: tuple


@dataclass(frozen=True)
class Matrix:
    rows: tuple  # tuple of tuples of values


@dataclass(frozen=True)
class Relation:
    """``a = b``, ``a < x \\le b``: the parts (raw strings) and the operators between them."""

    parts: tuple
    ops: tuple


Value = Scalar | Text | Choice | BaseNumber | Sequence | SetOf | Interval | Union | Matrix | Relation

# --------------------------------------------------------------------------- splitting
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = ")]}"
_COMMAND = re.compile(r"\\[A-Za-z]+|\\.")


def _depth_scan(text: str):
    """Yield (index, depth) for each character; ``\\{``/``\\}``, ``\\left(`` and ``\\begin``/``\\end``
    count as brackets, and ``(``/``]`` may pair (intervals are ``(a, b]``)."""
    depth = 0
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            if text.startswith("\\{", i) or text.startswith("\\langle", i):
                depth += 1
            elif text.startswith("\\}", i) or text.startswith("\\rangle", i):
                depth -= 1
            elif text.startswith("\\begin", i):
                depth += 1
            elif text.startswith("\\end", i):
                depth -= 1
            yield i, depth
            match = _COMMAND.match(text, i)
            i = match.end() if match else i + 1
            continue
        if char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            depth -= 1
        yield i, depth
        i += 1


def split_top(text: str, separators: tuple[str, ...]) -> list[str]:
    """Split at separators that sit outside every bracket."""
    parts: list[str] = []
    start = 0
    skip_until = -1
    for i, depth in _depth_scan(text):
        if i < skip_until or depth != 0:
            continue
        for sep in separators:
            if text.startswith(sep, i) and not (sep[0] == "\\" and text[i + len(sep):i + len(sep) + 1].isalpha()):
                parts.append(text[start:i])
                start = i + len(sep)
                skip_until = start
                break
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _wrapped_by(text: str, left: str, right: str) -> bool:
    """True when ``text`` is one group from ``left`` to ``right`` (the first bracket closes last)."""
    if not (text.startswith(left) and text.endswith(right)):
        return False
    for i, depth in _depth_scan(text):
        if depth == 0 and i < len(text) - len(right):
            return False
    return True


# --------------------------------------------------------------------------- recognizers
_RELATIONS = {"\\leqslant": "<=", "\\geqslant": ">=", "\\leq": "<=", "\\geq": ">=", "\\le": "<=",
              "\\ge": ">=", "\\neq": "!=", "\\ne": "!=", "<=": "<=", ">=": ">=", "<": "<", ">": ">",
              "=": "="}
_RELATION_SEPARATORS = tuple(_RELATIONS)
_FUNCTION_WORDS = frozenset("sin cos tan sec csc cot log ln exp sqrt pi arcsin arccos arctan sinh cosh "
                            "tanh max min gcd lcm mod det".split())
_CHOICE = re.compile(r"\(([A-E])\).*|([A-E])\).*|([A-E])", re.S)
_TEXT = re.compile(r"[A-Za-z][A-Za-z' \-]*")
_BASE = re.compile(r"([0-9A-Za-z]+)_\{?\(?(\d+)\)?\}?")
_ELEMENT_OF = re.compile(r"^(?:[A-Za-z]|\\[a-z]+|\([A-Za-z](?:,[A-Za-z])*\))\s*\\in\s*(.+)$")
_MATRIX = re.compile(r"^\\begin\{([pbBvV]?matrix|array)\}(.*)\\end\{\1\}$", re.S)


def _text_answer(text: str) -> Text | None:
    """Plain words (``Evelyn``, ``even``, ``no solution``) but not ``p - q`` or ``sin x``."""
    if not _TEXT.fullmatch(text):
        return None
    words = re.findall(r"[A-Za-z']+", text)
    if not any(len(w) >= 3 and w.lower() not in _FUNCTION_WORDS for w in words):
        return None
    return Text(" ".join(w.lower() for w in words))


def _base_number(text: str) -> BaseNumber | None:
    match = _BASE.fullmatch(text)
    if not match or not re.search(r"\d", match.group(1)):
        return None
    base = int(match.group(2))
    digits = match.group(1).upper().lstrip("0") or "0"
    if not 2 <= base <= 36 or any(int(d, 36) >= base for d in digits):
        return None
    return BaseNumber(digits, base)


def _expand_pm(text: str) -> list[str] | None:
    """``1 \\pm \\sqrt{5}`` → [``1+\\sqrt{5}``, ``1-\\sqrt{5}``] (top-level signs only, at most 8)."""
    pieces = split_top(text, ("\\pm", "\\mp"))
    if len(pieces) == 1 or len(pieces) > 4:
        return None
    signs = [("+", "-") if "\\pm" in m.group(0) else ("-", "+")
             for m in re.finditer(r"\\pm|\\mp", text)]
    results = [pieces[0]]
    for sign_pair, piece in zip(signs, pieces[1:]):
        results = [r + s + piece for r in results for s in sign_pair]
    return results if len(signs) == len(pieces) - 1 else None


def _matrix(body: str, kind: str, depth: int) -> Matrix:
    if kind == "array":
        body = re.sub(r"^\s*\{[^{}]*\}", "", body)
    rows = [r for r in re.split(r"\\\\", body) if r.strip() and r.strip() != "\\hline"]
    return Matrix(tuple(tuple(parse_structure(c.strip(), depth + 1) for c in row.split("&")) for row in rows))


# --------------------------------------------------------------------------- the parser
def parse_structure(text: str, depth: int = 0) -> Value:
    """The shape of a normalized answer. Raises ``StructureError`` for empty or absurd input."""
    if depth > MAX_DEPTH:
        raise StructureError("answer nested too deeply")
    text = text.strip()
    if not text:
        raise StructureError("empty answer")
    recognized = _recognize_atom(text)
    if recognized is not None:
        return recognized
    if match := _ELEMENT_OF.match(text):
        return parse_structure(match.group(1), depth + 1)
    unions = split_top(text, ("\\cup",))
    if len(unions) > 1:
        return Union(tuple(parse_structure(p, depth + 1) for p in unions))
    items = split_top(text, (",", ";"))
    if len(items) > 1:
        return Sequence(tuple(parse_structure(p, depth + 1) for p in items if p), "", "")
    relation = _relation(text)
    if relation is not None:
        return relation
    return _recognize_group(text, depth)


def _recognize_atom(text: str) -> Value | None:
    if text == "\\emptyset":
        return SetOf(())
    if match := _CHOICE.fullmatch(text):
        return Choice(match.group(1) or match.group(2) or match.group(3))
    return _text_answer(text) or _base_number(text)


def _relation(text: str) -> Relation | None:
    pieces: list[str] = []
    ops: list[str] = []
    start = 0
    skip_until = -1
    for i, depth in _depth_scan(text):
        if i < skip_until or depth != 0:
            continue
        for sep in _RELATION_SEPARATORS:
            after = text[i + len(sep):i + len(sep) + 1]
            if text.startswith(sep, i) and not (sep[0] == "\\" and after.isalpha()):
                if sep in "<>" and after == "=":
                    continue
                pieces.append(text[start:i].strip())
                ops.append(_RELATIONS[sep])
                start = skip_until = i + len(sep)
                break
    if not ops:
        return None
    pieces.append(text[start:].strip())
    if any(not p for p in pieces):
        raise StructureError("relation with an empty side")
    return Relation(tuple(pieces), tuple(ops))


def _recognize_group(text: str, depth: int) -> Value:
    if match := _MATRIX.match(text):
        return _matrix(match.group(2), match.group(1), depth)
    if _wrapped_by(text, "\\{", "\\}"):
        inner = text[2:-2].strip()
        if not inner:
            return SetOf(())
        return SetOf(flatten_sets(tuple(parse_structure(p, depth + 1) for p in split_top(inner, (",", ";")) if p)))
    for left, right in (("\\langle", "\\rangle"),):
        if _wrapped_by(text, left, right):
            inner = text[len(left):-len(right)]
            return Sequence(tuple(parse_structure(p, depth + 1) for p in split_top(inner, (",",))), "(", ")")
    if text[0] in "([" and text[-1] in ")]" and _wrapped_by(text, text[0], text[-1]):
        inner = text[1:-1]
        items = split_top(inner, (",",))
        if len(items) > 1:
            return Sequence(tuple(parse_structure(p, depth + 1) for p in items), text[0], text[-1])
    expansions = _expand_pm(text)
    if expansions:
        return SetOf(tuple(Scalar(e) for e in expansions))
    return Scalar(text)


def flatten_sets(items: tuple) -> tuple:
    """Inside a set, ``a \\pm b`` counts as its two members."""
    out: list = []
    for item in items:
        out.extend(item.items if isinstance(item, SetOf) else (item,))
    return tuple(out)
