"""Normalize an answer string so that equal answers written differently look the same.

Gold answers and model answers go through the same function. The result is still LaTeX-like
text (``\\frac{1}{2}``, ``\\sqrt{3}``, ``(1,2]``); later stages split it into structures and,
when needed, parse it into SymPy. Everything here is plain string work, linear in the input,
so it is safe on hostile input and fast enough for RL rewards.

Policy decisions taken here (one place, so they are easy to find):

- units, currency and degree signs are dropped: ``5\\text{ cm}`` == ``5``, ``\\$18.90`` == ``18.9``;
- ``\\%`` becomes ``%`` (the comparison decides what a percent equals);
- thousands separators are removed only when every group has exactly three digits;
- ``\\dfrac``/``\\tfrac`` are ``\\frac``; ``\\frac12`` and ``\\sqrt2`` get their braces;
- ``\\text{...}`` is unwrapped (a whole-text answer is recognized later by its words);
- ``\\equiv`` is ``=`` and a trailing ``\\pmod{n}`` is dropped (``x \\equiv 3 \\pmod 9`` states 3);
- number words ("five") become digits.
"""
from __future__ import annotations

import re

# --------------------------------------------------------------------------- unicode
_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-",
    "\u00d7": r" \times ", "\u22c5": r" \cdot ", "\u00b7": r" \cdot ", "\u2219": r" \cdot ",
    "\u00f7": r" \div ", "\u2044": "/", "\u2215": "/",
    "\u221a": r"\sqrt", "\u221b": r"\sqrt[3]", "\u221c": r"\sqrt[4]",
    "\u03c0": r"\pi ", "\u221e": r"\infty ", "\u2264": r" \le ", "\u2265": r" \ge ",
    "\u2260": r" \ne ", "\u222a": r" \cup ", "\u2229": r" \cap ", "\u2208": r" \in ",
    "\u00b1": r" \pm ", "\u2213": r" \mp ", "\u2205": r"\emptyset ", "\u211d": r"\mathbb{R}",
    "\u00b0": r"^\circ", "\u2032": "'", "\u03b8": r"\theta ", "\u03b1": r"\alpha ",
    "\u03b2": r"\beta ", "\u03bb": r"\lambda ", "\u03c6": r"\phi ", "\u2026": r"\dots ",
    "\u00bd": r"\frac{1}{2}", "\u2153": r"\frac{1}{3}", "\u2154": r"\frac{2}{3}",
    "\u00bc": r"\frac{1}{4}", "\u00be": r"\frac{3}{4}", "\u2155": r"\frac{1}{5}",
    "\u2159": r"\frac{1}{6}", "\u215b": r"\frac{1}{8}",
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\uff08": "(", "\uff09": ")",
    "\uff0c": ",", "\u3002": ".", "\uff1a": ":",
}
for _space in "\u00a0\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000\t\r\n":
    _UNICODE[_space] = " "
_UNICODE["\u200b"] = ""
_UNICODE_TABLE = str.maketrans(_UNICODE)

_SUPERSCRIPTS = str.maketrans("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207b\u207a",
                              "0123456789-+")
_SUPERSCRIPT_RUN = re.compile("[\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207b\u207a]+")


def _map_unicode(text: str) -> str:
    """Unicode math (− × √ π ², ½ ...) to the LaTeX spelling the rest of the pipeline knows."""
    text = _SUPERSCRIPT_RUN.sub(lambda m: "^{" + m.group(0).translate(_SUPERSCRIPTS) + "}", text)
    return text.translate(_UNICODE_TABLE)


# --------------------------------------------------------------------------- wrappers
MAX_WRAPPERS = 12  # layers of $...$, bold, boxes around one answer; more is not an answer
MAX_BRACE_DEPTH = 30  # nesting that brace_arguments rewrites; deeper text is left as it is
_WRAPPERS = (("$$", "$$"), ("$", "$"), (r"\(", r"\)"), (r"\[", r"\]"), ("**", "**"), ("`", "`"))
_BOX_PREFIX = re.compile(r"^\\(?:boxed|fbox)\s*\{")


def matching_brace(text: str, open_index: int, limit: int | None = None) -> int:
    """Index of the ``}`` closing the ``{`` at ``open_index``, or -1 (also when it is not found
    within ``limit`` characters). Escaped braces are skipped."""
    depth = 0
    i = open_index
    n = len(text) if limit is None else min(len(text), open_index + limit)
    while i < n:
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def strip_wrappers(text: str) -> str:
    """Remove what surrounds an answer but is not part of it: ``$..$``, ``\\(..\\)``, bold, a box,
    a trailing period, ``I hope it is correct``."""
    previous = None
    for _ in range(MAX_WRAPPERS):
        if previous == text:
            break
        previous = text
        text = text.strip()
        text = re.sub(r"(?i)\.?\s*I hope it is correct\.?$", "", text)
        text = text.rstrip(" .,;:")
        for left, right in _WRAPPERS:
            if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
                text = text[len(left):len(text) - len(right)]
        match = _BOX_PREFIX.match(text)
        if match and matching_brace(text, match.end() - 1) == len(text) - 1:
            text = text[match.end():-1]
    return text


# --------------------------------------------------------------------------- commands with arguments
_COMMAND = re.compile(r"\\[A-Za-z]+|\\.")


def _read_argument(text: str, i: int) -> tuple[str, int] | None:
    """Read one LaTeX argument starting at ``i`` (after spaces): a ``{group}``, a command or one
    character. Returns (argument without braces, index after it)."""
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    if i >= n:
        return None
    if text[i] == "{":
        end = matching_brace(text, i)
        if end < 0:
            return None
        return text[i + 1:end], end + 1
    if text[i] == "\\":
        match = _COMMAND.match(text, i)
        return (match.group(0), match.end()) if match else None
    if text[i] in "}^_&":
        return None
    return text[i], i + 1


_ARG_COMMANDS = re.compile(r"\\(frac|binom|sqrt)(?![A-Za-z])")


def brace_arguments(text: str, depth: int = 0) -> str:
    """``\\frac12`` → ``\\frac{1}{2}``, ``\\frac 34``, ``\\frac9{19}``, ``\\sqrt2`` → ``\\sqrt{2}``.

    Follows LaTeX: an unbraced argument is one character, so ``\\sqrt51`` is ``\\sqrt{5}1``."""
    if depth > MAX_BRACE_DEPTH:
        return text
    out: list[str] = []
    pos = 0
    for match in _ARG_COMMANDS.finditer(text):
        if match.start() < pos:
            continue
        out.append(text[pos:match.start()])
        name = match.group(1)
        i = match.end()
        out.append("\\" + name)
        if name == "sqrt":
            bracket = re.compile(r"\s*\[([^\[\]]*)\]").match(text, i)
            if bracket:
                out.append("[" + bracket.group(1) + "]")
                i = bracket.end()
        for _ in range(1 if name == "sqrt" else 2):
            argument = _read_argument(text, i)
            if argument is None:
                break
            out.append("{" + brace_arguments(argument[0], depth + 1) + "}")
            i = argument[1]
        pos = i
    out.append(text[pos:])
    return "".join(out)


# --------------------------------------------------------------------------- units and text
UNIT_WORDS = (
    "cm", "mm", "km", "meter", "meters", "metre", "metres", "centimeter", "centimeters",
    "millimeter", "millimeters", "kilometer", "kilometers", "inch", "inches", "ft", "foot",
    "feet", "yard", "yards", "yd", "mile", "miles", "mph", "kph", "km/h", "m/s",
    "second", "seconds", "sec", "minute", "minutes", "min", "hour", "hours", "hr", "hrs",
    "day", "days", "week", "weeks", "month", "months", "year", "years", "yr",
    "dollar", "dollars", "cent", "cents", "usd", "euro", "euros", "pound", "pounds", "lb", "lbs",
    "ounce", "ounces", "oz", "gram", "grams", "kg", "kilogram", "kilograms", "mg", "ton", "tons",
    "liter", "liters", "litre", "litres", "ml", "gallon", "gallons", "gal", "quart", "quarts",
    "cup", "cups", "degree", "degrees", "deg", "radian", "radians", "rad", "unit", "units",
    "square", "sq", "cubic", "percent", "points", "point", "students", "people", "apples",
)
# One-letter units are read as units only after a space ("5 m"), never glued ("5m" may be 5·m).
_SHORT_UNITS = frozenset({"m", "s", "h", "g", "l", "in", "mi"})
_UNIT_SET = frozenset(UNIT_WORDS)
_TEXT_COMMANDS = re.compile(
    r"\\(?:text|mbox|textrm|textnormal|mathrm|textbf|mathbf|textit|mathit|textsf|mathsf|emph|"
    r"boldsymbol|operatorname|hbox)\s*\{")
_TRAILING_TEXT = re.compile(r"^(.*?\S)\s*\\text\{([^{}]*)\}\s*(\^\s*\{?\s*[23]\s*\}?)?$")
_UNIT_POWER = re.compile(r"\^\s?\{?\s?[23]\s?\}?$")
_LEADING_FILLER = re.compile(
    r"^(?:(?:(?:so|thus|therefore|hence|then|it|is|are|was|be|equals?|equal\s+to|exactly|just|only|"
    r"answer|final|approximately|about|around|roughly|either|option|choice)(?![A-Za-z])|=|:)\s*)+(?=\S)", re.I)


def _unify_text_commands(text: str) -> str:
    """``\\mbox``, ``\\textbf``, ``\\mathrm`` ... all become ``\\text``."""
    return _TEXT_COMMANDS.sub(r"\\text{", text)


def _is_unit_phrase(words: str, spaced: bool = True) -> bool:
    """True for ``cm``, ``square units``, ``km/h``; a one-letter unit only when ``spaced``."""
    tokens = [w.strip(".").lower() for w in words.replace("/", " ").split()]
    allowed = _UNIT_SET | _SHORT_UNITS if spaced else _UNIT_SET
    return bool(tokens) and all(t in allowed for t in tokens)


def _trailing_words(text: str) -> tuple[str, str, bool] | None:
    """``12 square cm^2`` → (``12``, ``square cm``, spaced=True): the plain words at the end and
    what comes before them. A scan from the end, linear (no backtracking regex on hostile input)."""
    body = _UNIT_POWER.sub("", text).rstrip()
    i = len(body)
    while i > 0 and (body[i - 1].isascii() and (body[i - 1].isalpha() or body[i - 1] in " ./")):
        i -= 1
    head, words = body[:i], body[i:]
    stripped = words.lstrip(" ./")
    if not stripped or not stripped[0].isalpha() or not head or head[-1] not in "0123456789}":
        return None
    head += words[:len(words) - len(stripped)]
    return head.rstrip(), stripped.strip(), head != head.rstrip()


def _drop_units(text: str) -> str:
    """Drop a trailing unit: ``15\\text{ cm}^2``, ``5.4 cents``, ``18 dollars``, ``7 apples``."""
    for _ in range(3):
        match = _TRAILING_TEXT.match(text)
        if match and re.search(r"[\d}]", match.group(1)) and re.fullmatch(r"[A-Za-z .,/'-]*", match.group(2)):
            if match.group(2).strip() == "" or _is_unit_phrase(match.group(2)) or re.search(r"\d", match.group(1)):
                text = match.group(1)
                continue
        split = _trailing_words(text)
        if split and re.search(r"\d", split[0]):
            head, words, spaced = split
            spaced = spaced and bool(re.fullmatch(r"[-+]?[\d.,/]+", head))
            long_words = spaced and all(len(w.strip(".")) >= 2 for w in words.split())
            if _is_unit_phrase(words, spaced) or long_words:
                text = head
                continue
        break
    return text


def _unwrap_text(text: str) -> str:
    """``\\text{(B)}`` → ``(B)``; ``\\text{ and }`` → ``,``. Runs after units were dropped."""
    text = re.sub(r"\\text\{\s*(?:and|or)\s*\}", ",", text)
    for _ in range(20):
        match = re.search(r"\\text\{", text)
        if not match:
            break
        end = matching_brace(text, match.end() - 1)
        if end < 0:
            break
        text = text[:match.start()] + text[match.end():end] + text[end + 1:]
    return text


# --------------------------------------------------------------------------- numbers
_THOUSANDS = re.compile(r"(?<![\d.,])(\d{1,3})((?:,\d{3})+)(?![\d]|,\d)")
_SPACED_THOUSANDS = re.compile(r"(?<![\d.,/ ])(\d{1,3})((?: \d{3})+)(?![\d/.]| ?\\frac| \d)")


def _remove_thousands(text: str) -> str:
    """``12,\\!345``, ``12{,}345``, ``1,234,567`` and ``1 000 000`` → digits only.

    A plain ``1,234`` inside brackets is left alone: ``(100,200)`` is a point, not 100200."""
    text = re.sub(r"(?<=\d)\{,\}(?=\d{3})", "", text)
    text = re.sub(r"(?<=\d),\\!\s*(?=\d{3})", "", text)
    text = re.sub(r"(?<=\d)(?:\\,|\\ |\\;|~)(?=\d{3}(?!\d))", " ", text)
    if not re.search(r"[(\[]|\\\{|\\begin", text):
        text = _THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(",", ""), text)
    return _SPACED_THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(" ", ""), text)


_WORD_NUMBERS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
    "hundred": 100, "thousand": 1000, "million": 1000000,
}


# --------------------------------------------------------------------------- the pipeline
PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")
_SPACING = re.compile(r"\\\\|\\[,;:! >]|\\q?quad(?![A-Za-z])|~")
_SIZING = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|big|Big|bigg|Bigg)(?![A-Za-z])\s*")
_STYLE = re.compile(r"\\(?:displaystyle|textstyle|scriptstyle|mathstrut)(?![A-Za-z])")
_BRACKETED_MATRIX = re.compile(r"^[\[(]\s*(\\begin\{(\w+)\}.*\\end\{\2\})\s*[\])]$", re.S)
_CURRENCY = re.compile(r"\\\$|\\textdollar|\$|\\(?:euro|pounds)(?![A-Za-z])|[€£¥]|US(?=\d)")
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])")
# "x \equiv 3 \pmod{9}": a congruence states a value; the modulus is context.
_MODULUS = re.compile(r"(?:\\pmod\s?\{[^{}]*\}|\\pmod\s?\w+|\(\s?\\(?:bmod|mod)\s?[^()]*\)"
                      r"|\\(?:bmod|mod)\s?\{?\w+\}?)$")
_INFINITY = re.compile(r"\\infinity|\\inf(?![A-Za-z])|(?<![A-Za-z\\])(?:infinity|infty|inf)(?![A-Za-z])")
_SPACE = re.compile(r"(.) (?=(.))")


def _keep_space(before: str, after: str) -> bool:
    return (before.isalpha() and after.isalpha()) or (before.isdigit() and after.isdigit())


def _squash_spaces(text: str) -> str:
    """Drop spaces except between two letters (``\\pi r``) or two digits (``2 1/2``)."""
    text = re.sub(r" +", " ", text).strip()
    return _SPACE.sub(lambda m: m.group(1) + (" " if _keep_space(m.group(1), m.group(2)) else ""), text)


def _strip_markup(text: str) -> str:
    """Layout that never changes a value: ``\\left``, ``\\displaystyle``, spacing, ``\\dfrac``,
    thousands separators, currency, degree signs, a congruence's modulus."""
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    text = text.replace("\\dbinom", "\\binom").replace("\\tbinom", "\\binom")
    text = _SIZING.sub("", _STYLE.sub("", text))
    text = _BRACKETED_MATRIX.sub(r"\1", text.strip())
    text = _remove_thousands(text)
    text = _SPACING.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", text)
    text = _CURRENCY.sub(" ", text)
    text = text.replace("\\%", "%").replace("\\percent", "%")
    if "per" in text:
        text = re.sub(r"(?:percent|per cent)$", "%", text.rstrip())
    text = _DEGREES.sub("", text)
    if "mod" in text:
        text = _MODULUS.sub("", text.rstrip())
    return text.replace("\\equiv", "=")


def _strip_words(text: str) -> str:
    """Units, ``\\text{...}`` wrappers and lead-in words ("so", "approximately", "x is")."""
    text = re.sub(r"\\text\{\s*\}", "", _unify_text_commands(text))
    text = _drop_units(text.strip())
    text = _unwrap_text(text)
    text = _drop_units(text.strip())
    return _LEADING_FILLER.sub("", strip_wrappers(text))


def _canonical_symbols(text: str) -> str:
    """One spelling for the reals, the empty set, infinity, "and"/"or" lists, braces, spaces."""
    text = re.sub(r"\\(?:mathbb|Bbb)\{R\}|\\R(?![A-Za-z])", r"(-\\infty,\\infty)", text)
    text = re.sub(r"\\varnothing|\\\{\s*\\\}", r"\\emptyset", text)
    text = _INFINITY.sub(r"\\infty", text)
    text = re.sub(r"\+\s*\\infty", r"\\infty", text)
    if re.search(r"[\d\\=]", text):
        text = re.sub(r"(?<![A-Za-z])(?:and|or)(?![A-Za-z])", ",", text)
    text = brace_arguments(text).replace("**", "^")
    return _remove_thousands(_squash_spaces(text))


def normalize(answer: str) -> str:
    """The canonical spelling of ``answer`` (see the module docstring for the policy)."""
    if PLAIN_NUMBER.fullmatch(answer):
        return answer  # the common case, already canonical
    text = strip_wrappers(_map_unicode(answer))
    text = _canonical_symbols(_strip_words(_strip_markup(text)))
    word = text.lower().rstrip(".")
    if word in _WORD_NUMBERS:
        return str(_WORD_NUMBERS[word])
    return text.lstrip(" ,;").rstrip(" ,;.")
