"""Plain numbers in pure Python: the fast path that grades most answers in microseconds.

``parse_number`` reads a normalized answer that is just a number (integer, decimal, fraction,
mixed number, repeating decimal, scientific notation, small integer power, percent) into an exact
``Fraction``. Anything else returns ``None`` and goes to the symbolic path.

Tolerance policy: two exact numbers must be equal. When either side was written as a decimal
(``0.333333``) the values must agree to a relative ``REL_TOL`` = 1e-6, so ``0.333333`` equals
1/3 but ``0.33`` and ``0.3333`` do not.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

REL_TOL = Fraction(1, 10**6)
MAX_DIGITS = 400  # a plain number with more digits than this is not taken by the fast path

_DEC = r"(?:\d+(?:\.\d*)?|\.\d+)"
_INT_RE = re.compile(r"[-+]?\d+")
_DECIMAL_RE = re.compile(rf"[-+]?{_DEC}")
_FRAC_RE = re.compile(rf"([-+]?)\\frac\{{([-+]?{_DEC})\}}\{{([-+]?{_DEC})\}}")
_SLASH_RE = re.compile(rf"([-+]?{_DEC})/([-+]?{_DEC})")
_MIXED_FRAC_RE = re.compile(r"([-+]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")
_MIXED_SLASH_RE = re.compile(r"([-+]?)(\d+) (\d+)/(\d+)")
_REPEATING_RE = re.compile(r"([-+]?)(\d*)\.(\d*)\\(?:overline|bar|dot)\{(\d+)\}")
_SCI_RE = re.compile(rf"([-+]?{_DEC})(?:[eE]|(?:\\times|\\cdot|\*|x)10\^)\{{?([-+]?\d+)\}}?")
_POWER_RE = re.compile(r"([-+]?)(\d+)\^\{?(\d+)\}?")


@dataclass(frozen=True)
class Number:
    """An exact value and whether it was written as a decimal (then compared with tolerance)."""

    value: Fraction
    exact: bool = True


def _decimal(text: str) -> Number:
    return Number(Fraction(text), exact="." not in text)


def _signed(sign: str, number: Number) -> Number:
    return Number(-number.value, number.exact) if sign == "-" else number


def _fraction(numerator: Number, denominator: Number) -> Number | None:
    if denominator.value == 0:
        return None
    return Number(numerator.value / denominator.value, numerator.exact and denominator.exact)


def _repeating(sign: str, whole: str, fixed: str, repeat: str) -> Number:
    """``0.1\\overline{6}`` = 1/6: fixed digits, then the repeating block forever."""
    value = Fraction(int(whole or "0"))
    value += Fraction(int(fixed or "0"), 10 ** len(fixed))
    value += Fraction(int(repeat), (10 ** len(repeat) - 1) * 10 ** len(fixed))
    return _signed(sign, Number(value))


def _parse_unsigned_forms(text: str) -> Number | None:
    """Every plain-number spelling the fast path knows (without percent)."""
    if _DECIMAL_RE.fullmatch(text):
        return _decimal(text)
    if match := _FRAC_RE.fullmatch(text):
        fraction = _fraction(_decimal(match.group(2)), _decimal(match.group(3)))
        return fraction and _signed(match.group(1), fraction)
    if match := _SLASH_RE.fullmatch(text):
        return _fraction(_decimal(match.group(1)), _decimal(match.group(2)))
    for pattern in (_MIXED_FRAC_RE, _MIXED_SLASH_RE):
        if match := pattern.fullmatch(text):
            whole, numerator, denominator = (int(match.group(k)) for k in (2, 3, 4))
            if 0 < numerator < denominator:
                return _signed(match.group(1), Number(whole + Fraction(numerator, denominator)))
    if match := _REPEATING_RE.fullmatch(text):
        return _repeating(*match.groups())
    if match := _SCI_RE.fullmatch(text):
        exponent = int(match.group(2))
        if abs(exponent) <= MAX_DIGITS:
            mantissa = _decimal(match.group(1))
            return Number(mantissa.value * Fraction(10) ** exponent, mantissa.exact)
    if match := _POWER_RE.fullmatch(text):
        base, exponent = int(match.group(2)), int(match.group(3))
        if base < 2 or exponent * math.log10(base) <= MAX_DIGITS:
            return _signed(match.group(1), Number(Fraction(base) ** exponent))
    return None


def parse_number(text: str) -> Number | None:
    """The value of a normalized plain-number answer, or None if it is not one."""
    if not text or len(text) > MAX_DIGITS or text.endswith("%"):
        return None
    if text[0] == "-" and text[1:2] == "(" and text.endswith(")"):
        inner = parse_number(text[2:-1])
        return inner and Number(-inner.value, inner.exact)
    if text[0] == "(" and text[-1] == ")" and "(" not in text[1:]:
        return parse_number(text[1:-1])
    return _parse_unsigned_forms(text)


def percent_variants(text: str) -> list[tuple[str, Fraction]]:
    """``25%`` can mean 25 or 0.25: (text without %, scale) pairs for both readings."""
    if text.endswith("%"):
        return [(text[:-1].rstrip(), Fraction(1)), (text[:-1].rstrip(), Fraction(1, 100))]
    return [(text, Fraction(1))]


def numbers_equal(a: Number, b: Number) -> bool:
    """Exact equality, or ``REL_TOL`` relative agreement when either side is a decimal."""
    if a.value == b.value:
        return True
    if a.exact and b.exact:
        return False
    scale = max(abs(a.value), abs(b.value))
    return abs(a.value - b.value) <= REL_TOL * scale
