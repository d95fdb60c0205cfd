"""SymPy comparison of leaves and relations. Runs inside the time-limited worker process.

Two expressions are equal when they agree numerically, at high precision, at several random
points for their free symbols (and exactly when there are none); ``simplify`` is only the last
resort when no point could be evaluated. Random-point testing is how a careful human checks an
identity, it cannot hang like ``simplify`` can, and with 30-digit arithmetic and four points a
false "equal" needs a coincidence. Tolerance: 1e-12 relative between exact expressions, 1e-6 when
either side contains a decimal (``numeric.REL_TOL``).
"""
from __future__ import annotations

import random

import sympy as sp

from .compare import Comparer
from .latex import parse_latex
from .numeric import percent_variants
from .structure import Relation

EXACT_TOL = sp.Float("1e-12", 30)
DECIMAL_TOL = sp.Float("1e-6", 30)
POINTS = 4
PRECISION = 30


def _fold_case(a: sp.Expr, b: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """``3R^2`` vs ``3r^2``: when the symbol names differ only in case, read them as one."""
    names_a = {s.name for s in a.free_symbols}
    names_b = {s.name for s in b.free_symbols}
    if names_a == names_b or {n.lower() for n in names_a} != {n.lower() for n in names_b}:
        return a, b
    lower = {s: sp.Symbol(s.name.lower()) for s in a.free_symbols | b.free_symbols}
    return a.xreplace(lower), b.xreplace(lower)


def _value(expr: sp.Expr, point: dict | None = None) -> sp.Expr | None:
    try:
        value = expr.evalf(PRECISION, subs=point) if point else sp.N(expr, PRECISION)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None
    if not value.is_number or value.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        return None
    return value


def _close(a: sp.Expr, b: sp.Expr, tol: sp.Float) -> bool:
    difference = abs(sp.N(a - b, PRECISION))
    scale = max(abs(a), abs(b))
    return bool(difference <= tol * scale) or bool(difference == 0)


def _points(symbols: list[sp.Symbol], count: int):
    rng = random.Random(1234)
    for _ in range(count):
        yield {s: sp.Float(rng.choice((-1, 1)) * rng.uniform(0.3, 2.7), PRECISION) for s in symbols}


def expressions_equal(a: sp.Expr, b: sp.Expr, inexact: bool) -> bool:
    """Numerically equal (at random points when there are free symbols)."""
    if a == b:
        return True
    a, b = _fold_case(a, b)
    tol = DECIMAL_TOL if inexact else EXACT_TOL
    symbols = sorted(a.free_symbols | b.free_symbols, key=lambda s: s.name)
    if a.has(sp.oo, -sp.oo, sp.zoo) or b.has(sp.oo, -sp.oo, sp.zoo):
        return sp.simplify(a - b) == 0
    if not symbols:
        value_a, value_b = _value(a), _value(b)
        return value_a is not None and value_b is not None and _close(value_a, value_b, tol)
    agreed = 0
    for point in _points(symbols, POINTS):
        value_a, value_b = _value(a, point), _value(b, point)
        if value_a is None or value_b is None:
            continue
        if not _close(value_a, value_b, tol):
            return False
        agreed += 1
    if agreed >= 2:
        return True
    return sp.simplify(a - b) == 0


def _constant_ratio(a: sp.Expr, b: sp.Expr, positive: bool) -> bool:
    """Is ``a = c * b`` for a constant ``c`` (non-zero; positive when ``positive``)?"""
    if a == 0 or b == 0:
        return a == b
    a, b = _fold_case(a, b)
    symbols = sorted(a.free_symbols | b.free_symbols, key=lambda s: s.name)
    ratios = []
    for point in _points(symbols, POINTS) if symbols else [None]:
        value_a, value_b = _value(a, point), _value(b, point)
        if value_a is None or value_b is None or value_b == 0:
            continue
        ratios.append(sp.N(value_a / value_b, PRECISION))
    if not ratios or not all(_close(r, ratios[0], EXACT_TOL) for r in ratios) or ratios[0] == 0:
        return False
    return not positive or bool(sp.re(ratios[0]) > 0)


_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">="}


def _sides(relation: Relation) -> list[tuple[str, sp.Expr]]:
    """Each link of a chain as (``<``, ``<=`` or ``=``/``!=``, lhs - rhs) with ``>`` flipped to ``<``."""
    exprs = [parse_latex(part)[0] for part in relation.parts]
    links = []
    for op, left, right in zip(relation.ops, exprs, exprs[1:]):
        if op in (">", ">="):
            links.append((_FLIP[op], right - left))
        else:
            links.append((op, left - right))
    return links


class SymbolicComparer(Comparer):
    """``Comparer`` whose leaves and relations fall back to SymPy."""

    def symbolic_scalars_equal(self, a: str, b: str) -> bool:
        for text_a, scale_a in percent_variants(a):
            expr_a, inexact_a = parse_latex(text_a)
            for text_b, scale_b in percent_variants(b):
                expr_b, inexact_b = parse_latex(text_b)
                if expressions_equal(expr_a * sp.Rational(scale_a), expr_b * sp.Rational(scale_b),
                                     inexact_a or inexact_b):
                    return True
        return False

    def relations_equal(self, a: Relation, b: Relation) -> bool:
        links_a, links_b = _sides(a), _sides(b)
        if len(links_a) != len(links_b):
            return False
        for candidate in (links_b, links_b[::-1]):
            if all(op_a == op_b and _constant_ratio(d_a, d_b, positive=op_a in ("<", "<="))
                   for (op_a, d_a), (op_b, d_b) in zip(links_a, candidate)):
                return True
        return False


SYMBOLIC = SymbolicComparer()
