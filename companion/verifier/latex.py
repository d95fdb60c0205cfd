"""A small LaTeX-math parser that builds SymPy expressions, refusing inputs that would explode.

Why our own: it knows exactly the notation that answers use (``\\frac``, ``\\sqrt[3]{}``, implicit
multiplication ``2\\pi r``, ``\\sin^2 x``, ``|x|``, ``n!``, ``\\binom``), it never ``eval``s text,
and every power, factorial and binomial is checked *before* SymPy computes it: a result with more
than ``MAX_RESULT_DIGITS`` digits raises ``TooLarge`` instead of hanging. (A signal cannot stop a
long big-integer multiplication; refusing it up front can.)

Grammar (lowest precedence first)::

    expression := term (("+" | "-") term)*
    term       := signed (("*" | "/" | \\cdot | \\times | \\div) signed | implicit-factor)*
    signed     := ("-" | "+") signed | power
    power      := postfix ("^" exponent)?
    postfix    := atom "!"*
    atom       := number | letter[_sub] | (expr) | [expr] | {expr} | |expr| | \\frac{}{} | \\sqrt[n]{}
                | \\binom{}{} | function argument | constant
"""
from __future__ import annotations

import math
import re

import sympy as sp

MAX_TOKENS = 400
MAX_DEPTH = 40
MAX_RESULT_DIGITS = 10_000
MAX_SYMBOLIC_EXPONENT = 1000
MAX_FACTORIAL = 2000


class LatexError(ValueError):
    """The text is not a math expression this parser reads."""


class TooLarge(LatexError):
    """The expression would be too large to compute (huge power, factorial, nesting)."""


_TOKEN = re.compile(r"""
    (?P<num>\d+(?:\.\d*)?|\.\d+)
  | (?P<cmd>\\[A-Za-z]+|\\[{}|])
  | (?P<word>(?:arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|sec|csc|cot|log|ln|exp|sqrt|pi)(?![A-Za-z]))
  | (?P<letter>[A-Za-z])
  | (?P<op>\*\*|[-+*/^_!(){}\[\]|'])
  | (?P<space>\s+)
""", re.X)

_FUNCTIONS = {
    "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "sec": sp.sec, "csc": sp.csc, "cot": sp.cot,
    "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh,
    "tanh": sp.tanh, "ln": sp.log, "exp": sp.exp, "log": sp.log,
}
_CONSTANTS = {"pi": sp.pi, "infty": sp.oo, "e": sp.E}
_GREEK = frozenset("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu "
                   "xi omicron rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi "
                   "Sigma Phi Psi Omega".split())
_IGNORED = frozenset({"left", "right", "displaystyle", "mathrm", "mathit", "text"})


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise LatexError(f"unexpected character {text[pos]!r} at position {pos}")
        pos = match.end()
        kind = match.lastgroup
        if kind == "space":
            continue
        value = match.group(0)
        if kind == "cmd" and value[1:] in _IGNORED:
            continue
        tokens.append((kind, value))
        if len(tokens) > MAX_TOKENS:
            raise TooLarge("expression too long")
    return tokens


def _log10_abs(number: sp.Expr) -> float:
    """log10 |number| for a SymPy Rational or Float, without converting huge values to float."""
    if number.is_Rational:
        p, q = abs(int(number.p)), int(number.q)
        return math.log10(p) - math.log10(q)
    return math.log10(abs(float(number)))


def _too_many_digits(base: sp.Expr, exponent: sp.Expr) -> bool:
    """Would ``base ** exponent`` (both numbers) have more than ``MAX_RESULT_DIGITS`` digits?"""
    digits_per_unit = abs(_log10_abs(base))
    if digits_per_unit == 0 or exponent == 0:
        return False
    return _log10_abs(exponent) + math.log10(digits_per_unit) > math.log10(MAX_RESULT_DIGITS)


def guarded_power(base: sp.Expr, exponent: sp.Expr) -> sp.Expr:
    """``base ** exponent`` unless the result would have more than ``MAX_RESULT_DIGITS`` digits."""
    if exponent.is_Number and base.is_Number:
        if base not in (sp.Integer(0), sp.Integer(1), sp.Integer(-1)) and _too_many_digits(base, exponent):
            raise TooLarge("power too large")
    elif exponent.is_Number:
        if abs(exponent) > MAX_SYMBOLIC_EXPONENT and base != sp.I:
            raise TooLarge("exponent too large")
    elif not exponent.free_symbols:
        magnitude = sp.N(exponent, 15)
        if not magnitude.is_number or (magnitude.is_real and abs(magnitude) > MAX_RESULT_DIGITS):
            raise TooLarge("exponent too large")
    return sp.Pow(base, exponent)


def guarded_factorial(value: sp.Expr) -> sp.Expr:
    if value.is_Number:
        if not value.is_Integer or value < 0:
            raise LatexError("factorial of a non-natural number")
        if value > MAX_FACTORIAL:
            raise TooLarge("factorial too large")
    return sp.factorial(value)


def guarded_binomial(n: sp.Expr, k: sp.Expr) -> sp.Expr:
    if n.is_Number and abs(n) > MAX_FACTORIAL:
        raise TooLarge("binomial too large")
    return sp.binomial(n, k)


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0
        self.abs_depth = 0
        self.inexact = False

    # ----------------------------------------------------------------- token helpers
    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise LatexError("unexpected end of expression")
        self.pos += 1
        return token

    def expect(self, value: str) -> None:
        token = self.take()
        if token[1] != value:
            raise LatexError(f"expected {value!r}, found {token[1]!r}")

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[1] in values

    # ----------------------------------------------------------------- grammar
    def parse(self) -> sp.Expr:
        if not self.tokens:
            raise LatexError("empty expression")
        value = self.expression()
        if self.pos != len(self.tokens):
            raise LatexError(f"unexpected {self.peek()[1]!r}")
        return value

    def expression(self) -> sp.Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TooLarge("expression nested too deeply")
        value = self.term()
        while self.at("+", "-"):
            op = self.take()[1]
            right = self.term()
            value = value + right if op == "+" else value - right
        self.depth -= 1
        return value

    def term(self) -> sp.Expr:
        value = self.signed()
        while True:
            if self.at("*", "\\cdot", "\\times", "\\ast"):
                self.take()
                value = value * self.signed()
            elif self.at("/", "\\div"):
                self.take()
                value = value / self.signed()
            elif self.starts_factor():
                value = value * self.power()
            else:
                return value

    def starts_factor(self) -> bool:
        token = self.peek()
        if token is None:
            return False
        kind, value = token
        if kind in ("num", "letter", "word"):
            return True
        if kind == "cmd":
            name = value[1:]
            return name in _FUNCTIONS or name in _CONSTANTS or name in _GREEK or name in (
                "frac", "sqrt", "binom", "lfloor", "lceil")
        if value == "|":
            return self.abs_depth == 0
        return value in ("(", "{")

    def signed(self) -> sp.Expr:
        if self.at("-"):
            self.take()
            return -self.signed()
        if self.at("+"):
            self.take()
            return self.signed()
        return self.power()

    def power(self) -> sp.Expr:
        base = self.postfix()
        if self.at("^", "**"):
            self.take()
            return guarded_power(base, self.exponent())
        return base

    def exponent(self) -> sp.Expr:
        if self.at("-"):
            self.take()
            return -self.exponent()
        if self.at("{"):
            return self.group()
        return self.postfix()

    def postfix(self) -> sp.Expr:
        value = self.atom()
        while self.at("!"):
            self.take()
            value = guarded_factorial(value)
        while self.at("'"):
            raise LatexError("derivative marks are not supported")
        return value

    def group(self) -> sp.Expr:
        """``{expr}``, or one atom when the braces are missing."""
        if self.at("{"):
            self.take()
            value = self.expression()
            self.expect("}")
            return value
        return self.atom()

    def subscript(self) -> str:
        if not self.at("_"):
            return ""
        self.take()
        if self.at("{"):
            self.take()
            parts = []
            while not self.at("}"):
                parts.append(self.take()[1])
            self.take()
            return "_" + "".join(parts)
        return "_" + self.take()[1]

    def atom(self) -> sp.Expr:
        kind, value = self.take()
        if kind == "num":
            if "." in value:
                self.inexact = True
            return sp.Rational(value)
        if kind == "letter":
            return self.letter(value)
        if kind == "word":
            return self.command(value)
        if kind == "cmd":
            return self.command(value[1:])
        return self.bracket(value)

    def letter(self, name: str) -> sp.Expr:
        sub = self.subscript()
        if not sub and name == "i":
            return sp.I
        if not sub and name == "e":
            return sp.E
        return sp.Symbol(name + sub)

    def bracket(self, value: str) -> sp.Expr:
        closing = {"(": ")", "[": "]", "{": "}", "|": "|"}.get(value)
        if closing is None:
            raise LatexError(f"unexpected {value!r}")
        if value == "|":
            self.abs_depth += 1
        inner = self.expression()
        self.expect(closing)
        if value == "|":
            self.abs_depth -= 1
            return sp.Abs(inner)
        return inner

    def command(self, name: str) -> sp.Expr:
        if name == "frac":
            numerator = self.group()
            return numerator / self.group()
        if name == "sqrt":
            return self.root()
        if name == "binom":
            n = self.group()
            return guarded_binomial(n, self.group())
        if name in ("lfloor", "lceil"):
            inner = self.expression()
            self.expect("\\r" + name[1:])
            return sp.floor(inner) if name == "lfloor" else sp.ceiling(inner)
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        if name in _FUNCTIONS:
            return self.function(name)
        if name in _GREEK:
            return sp.Symbol(name + self.subscript())
        raise LatexError(f"unknown command \\{name}")

    def root(self) -> sp.Expr:
        index = None
        if self.at("["):
            self.take()
            index = self.expression()
            self.expect("]")
        radicand = self.bracket(self.take()[1]) if self.at("(") else self.group()
        return sp.sqrt(radicand) if index is None else guarded_power(radicand, 1 / index)

    def function(self, name: str) -> sp.Expr:
        """``\\sin x``, ``\\sin(x)``, ``\\sin^2 x``, ``\\log_2 8``, ``\\sin 2x`` (= sin(2x))."""
        base = None
        if name == "log" and self.at("_"):
            self.take()
            base = self.group()
        power = None
        if self.at("^"):
            self.take()
            power = self.exponent()
        if self.at("("):
            self.take()
            argument = self.expression()
            self.expect(")")
        else:
            argument = self.power()
            while self.peek() is not None and self.peek()[0] in ("num", "letter"):
                argument = argument * self.power()
        result = _FUNCTIONS[name](argument) if base is None else sp.log(argument, base)
        return result if power is None else guarded_power(result, power)


def parse_latex(text: str) -> tuple[sp.Expr, bool]:
    """(SymPy expression, whether a decimal appeared) for a normalized LaTeX math string."""
    parser = _Parser(text)
    return parser.parse(), parser.inexact
