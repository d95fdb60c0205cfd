"""Find the final answer in a model's response.

Rules, in order:

1. Chat special tokens (``<|im_end|>``) are dropped. With a think block only the text after the
   last ``</think>`` counts; an opened but never closed ``<think>`` has no answer in strict mode
   (the model ran out of tokens while thinking), and no bare-number fallback otherwise.
2. Strict mode (RL rewards): the last ``\\boxed{}`` / ``\\fbox{}``, or nothing (an unclosed box
   at the end is nothing).
3. Otherwise the *last* explicit answer marker wins, whatever its kind: a box, "final answer
   is", "the answer is", "Answer:", GSM8K's ``#### n``, ``<answer>...</answer>``. A later
   "The answer is 12" beats an earlier intermediate ``\\boxed{7}``, except that a wordy phrase
   ("the answer is clear") never overrides a box, and "let us check our answer: ..." is not a
   marker. A box cut off by the end of the response counts with what it holds.
4. Boxes joined only by "or"/"and"/commas are one answer list (``\\boxed{4}`` or ``\\boxed{6}`` is
   "4, 6", which fails against a single gold value: hedging does not pay).
5. No marker: the last formula (``$...$``, ``\\[...\\]``, the last line of an ``align`` block, a
   last line that is a bare formula) unless a number comes after it, else the last number (with
   a ``π``/``√`` attached, or ``x ≤`` in front). Formulas ``$x = 2$ or $x = 3$`` form one list.

All scanning is linear: boxes are found anywhere, the other markers and the fallback only in the
last ``TAIL_CHARS`` characters.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .normalize import matching_brace, strip_wrappers

TAIL_CHARS = 50_000
PHRASE_CHARS = 300
MAX_JOINED = 10  # at most this many adjacent boxes form one answer list
MAX_BOX_CHARS = 20_000  # a box whose content is longer is treated as never closed

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# Quantifiers here are bounded ({0,3}): unbounded \s* next to \s* backtracks quadratically on
# long runs of spaces, and the response is untrusted input.
_PHRASE = re.compile(r"(?:final\s{1,3}answer|answer|correct\s{1,3}(?:option|choice))\s{0,3}(?:\*\*|__)?\s{0,3}"
                     r"(?:is|:|=|would\s{1,3}be|will\s{1,3}be)\s{0,3}(?:\*\*|__)?\s{0,3}:?", re.I)
# "let us check our answer: ..." introduces a check, not the answer
_CHECKING = re.compile(r"(?i)(?:check|verify|confirm|double-check)\w*\s+(?:our|the|my|this|that)?\s*(?:final\s+)?$")
# "17 and the remainder is 3" → 17; "5, not 6" → 5
_TRAILING_CLAUSE = re.compile(
    r",?\s+(?:and|but|because|since|which|so|as|where|with|for|from|if)\s+(?=[A-Za-z]{2,})|,\s*not\s", re.I)
_WORDY = re.compile(r"(?i)\b(?:clear|correct|wrong|simple|below|above|that|not|obvious|yes|no)\b")
_SPECIAL_TOKENS = re.compile(r"<\|[A-Za-z_]+\|>|</s>|<eos>")
_GSM8K = re.compile(r"####\s*([^\n]*)")
_NUMBER = re.compile(
    r"(?:(?:(?<=[\s(=:$*])|^)-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|(?<![\d.])\.\d+)"
    r"(?:\s?(?:\u03c0|\\pi(?![A-Za-z])|\u221a\d+)|%)?"
    r"|(?:(?<=[\s(=:$*])|^)-?\u221a\d+")
# "x \u2264 3" at the end of a response: keep the relation, it may be the whole answer.
_RELATION_TAIL = re.compile(r"(?<![A-Za-z\\])[a-z]\s*(?:\u2264|\u2265|<=|>=|<|>|\\leq?|\\geq?)\s*$")
_MATH_OPENER = re.compile(r"\$\$|\\\[|\\\(|\$|\\begin\{(?:align|aligned|equation|gather|eqnarray|multline)\*?\}")
_MATH_CLOSER = {"$$": "$$", "\\[": "\\]", "\\(": "\\)", "$": "$", "align": "\\end{"}
MAX_PHRASES = 20  # only the last few answer phrases can be the final answer
_BARE_TOKEN = re.compile(r"[^\s$]+")
_ASSIGNMENT = re.compile(r"\s*([A-Za-z])\s*=\s*[^=]+")
_JOINER = re.compile(r"[\s$]{0,6}(?:,|;|and|or|\\text\{\s{0,3}(?:and|or)\s{0,3}\}|\\quad)?[\s$]{0,6}"
                     r"(?:[A-Za-z]\s{0,3}=\s{0,3})?[\s$]{0,6}", re.I)
MAX_JOINER_CHARS = 30


@dataclass(frozen=True)
class _Candidate:
    start: int
    end: int
    text: str
    kind: str


@dataclass(frozen=True)
class _Span:
    """A math span: ``$...$``, ``$$...$$``, ``\\[...\\]``, ``\\(...\\)`` or an ``align``-like block."""

    start: int
    end: int
    text: str
    block: bool


def math_spans(text: str) -> list[_Span]:
    """Math spans in order, found in linear time: a delimiter that never closes is skipped at once
    (a lazy regex would rescan the rest of the text from every such opener). A ``$`` followed by
    a digit opens a dollar amount, so it cannot close a formula (``$100/$50``)."""
    spans: list[_Span] = []
    unclosed: set[str] = set()
    pos = 0
    while (match := _MATH_OPENER.search(text, pos)) is not None:
        opener = match.group(0)
        kind = "align" if opener.startswith("\\begin") else opener
        pos = match.end()
        if kind in unclosed:
            continue
        end = text.find(_MATH_CLOSER[kind], match.end())
        if end < 0:
            unclosed.add(kind)
            continue
        if kind == "$" and (end == match.end() or text[end + 1:end + 2].isdigit()):
            pos = end  # that "$" may open the next formula instead
            continue
        spans.append(_Span(match.start(), end + len(_MATH_CLOSER[kind]), text[match.end():end], kind == "align"))
        pos = end + len(_MATH_CLOSER[kind])
    return spans


def answer_region(response: str, strict: bool) -> str | None:
    """The part of the response that may hold the final answer (see rule 1)."""
    close = response.rfind("</think>")
    if close >= 0:
        return response[close + len("</think>"):]
    if "<think>" in response and strict:
        return None
    return response


def find_boxes(text: str) -> list[_Candidate]:
    """Outermost ``\\boxed{...}`` groups (braces matched), plus ``\\boxed 5``. A box that never
    closes ends the list as kind "unclosed", holding the rest of the text when that is short."""
    boxes: list[_Candidate] = []
    pos = 0
    while True:
        match = _BOX.search(text, pos)
        if not match:
            return boxes
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = matching_brace(text, i, MAX_BOX_CHARS)
            if end < 0:
                rest = text[i + 1:] if len(text) - i <= PHRASE_CHARS else ""
                boxes.append(_Candidate(match.start(), len(text), rest, "unclosed"))
                return boxes
            boxes.append(_Candidate(match.start(), end + 1, text[i + 1:end], "box"))
            pos = end + 1
        else:
            token = _BARE_TOKEN.match(text, i)
            if token and i > match.end():
                boxes.append(_Candidate(match.start(), token.end(), token.group(0), "box"))
            pos = token.end() if token else i


def _joined(text: str, end: int, start: int) -> bool:
    """Is the text between two answers only "or", "and", a comma, ``x =``?"""
    return start - end <= MAX_JOINER_CHARS and bool(_JOINER.fullmatch(text, end, start))


def _join_hedges(boxes: list[_Candidate], text: str) -> _Candidate | None:
    """The last closed box, merged with the boxes before it joined by "or", "and" or commas."""
    boxes = [b for b in boxes if b.kind == "box"]
    if not boxes:
        return None
    group = [boxes[-1]]
    for box in reversed(boxes[-MAX_JOINED:-1]):
        if not _joined(text, box.end, group[0].start):
            break
        group.insert(0, box)
    contents: list[str] = []
    for box in group:
        content = box.text.strip()
        if content not in contents:
            contents.append(content)
    return _Candidate(group[0].start, group[-1].end, ", ".join(contents), group[-1].kind)


def _sentence(text: str, start: int) -> str:
    """The answer phrase after a marker: up to the end of the sentence, line or display math."""
    i = start
    while i < len(text) and text[i] in " \t\n":
        i += 1
    for left, right in (("$$", "$$"), ("\\[", "\\]")):
        if text.startswith(left, i):
            end = text.find(right, i + len(left))
            return text[i:end + len(right)] if end >= 0 else text[i:i + PHRASE_CHARS]
    depth = 0
    in_math = False
    j = i
    limit = min(len(text), i + PHRASE_CHARS)
    while j < limit:
        char = text[j]
        if char == "\\" and j + 1 < limit:
            j += 2
            continue
        if char == "$":
            in_math = not in_math
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth <= 0 and not in_math:
            if char == "\n":
                break
            if char in ".!?" and (j + 1 >= len(text) or text[j + 1] in " \n\t*)"):
                break
        j += 1
    return text[i:j]


def _cut_clause(content: str) -> str:
    """``17 and the remainder is 3`` → ``17``: drop a trailing clause that starts with a word."""
    match = _TRAILING_CLAUSE.search(content)
    return content[:match.start()] if match and match.start() > 0 else content


def _inner_box(content: str, cut: bool = False) -> str:
    """A marker's content, reduced to the box inside it when there is one (else, with ``cut``,
    without a trailing clause)."""
    boxes = find_boxes(content)
    if boxes and boxes[-1].kind == "unclosed" and boxes[-1].text.strip():
        return boxes[-1].text
    joined = _join_hedges(boxes, content)
    if joined:
        return joined.text
    return _cut_clause(content) if cut else content


def _last_formula_in_prose(content: str) -> str:
    """``the larger of the two: $x=1$`` → ``x=1``: in a wordy phrase, the last formula is the answer."""
    spans = [span for span in math_spans(content) if _is_formula(_formula_text(span))]
    if not spans:
        return content
    outside = " ".join(content[a.end:b.start] for a, b in zip([_Span(0, 0, "", False)] + spans, spans + [
        _Span(len(content), len(content), "", False)]))
    return _formula_text(spans[-1]) if re.search(r"[A-Za-z]{3,}", outside) else content


def _phrases(text: str) -> list[_Candidate]:
    found = []
    for match in list(_PHRASE.finditer(text))[-MAX_PHRASES:]:
        if _CHECKING.search(text, max(0, match.start() - 40), match.start()):
            continue
        content = _last_formula_in_prose(_inner_box(_sentence(text, match.end()), cut=True))
        if content.strip():
            found.append(_Candidate(match.start(), match.end() + len(content), content, "phrase"))
    return found


def _markers(text: str) -> list[_Candidate]:
    candidates = _phrases(text)
    for match in _GSM8K.finditer(text):
        candidates.append(_Candidate(match.start(), match.end(), match.group(1), "gsm8k"))
    start = text.rfind("<answer>")  # only the last tag can hold the final answer
    if start >= 0:
        close = text.find("</answer>", start)
        end = close if close >= 0 else min(len(text), start + 8 + PHRASE_CHARS)
        candidates.append(_Candidate(start, end, _inner_box(text[start + 8:end]), "tag"))
    return candidates


def _looks_like_math(text: str) -> bool:
    """Math, or a short answer in words (``Evelyn``), but not "clear" in "the answer is clear"."""
    if re.search(r"[\d\\^=()\[\]{}+\-/]", text):
        return True
    return len(text.split()) <= 4 and not _WORDY.search(text)


def _is_formula(text: str) -> bool:
    """A ``$...$`` span that holds math (or one ``\\text{...}``), not prose between two dollar amounts."""
    if re.fullmatch(r"\s*\\text\{[^{}]+\}\s*", text):
        return True
    mathy = re.search(r"[\d\\]|[A-Za-z]\s*[-+=^/<>]", text)
    return bool(mathy) and not re.search(r"(?<![\\A-Za-z{])[A-Za-z]{3,}", re.sub(r"\\text\{[^{}]*\}", "", text))


def _formula_text(span: _Span) -> str:
    """The content of a math span; for a multi-line ``align`` block, its last line."""
    text = span.text
    if not span.block and "aligned" not in text:
        return text
    text = re.sub(r"\\(?:begin|end)\{aligned\}", "", text)
    lines = [line for line in re.split(r"\\\\(?:\[[^\]]*\])?", text) if line.strip()]
    return lines[-1].replace("&", "").strip() if lines else text


def _last_formula(text: str) -> tuple[int, str] | None:
    """The last ``$...$`` formula (with the ones before it when they list solutions, ``$x = 2$ or
    $x = 3$``), or a last line that is a bare formula; as (end position, formula). Equations stay
    whole: the comparison reads ``x = 5`` and ``29 \\cdot 7 = 203`` as their values."""
    formulas = [span for span in math_spans(text) if _is_formula(_formula_text(span))]
    if formulas:
        group = [formulas[-1]]
        last = _ASSIGNMENT.fullmatch(_formula_text(formulas[-1]))
        for span in reversed(formulas[-MAX_JOINED:-1]):
            same = _ASSIGNMENT.fullmatch(_formula_text(span))
            # only "x = 2 and x = 3" is a list of solutions; other formulas are steps
            if not (last and same and same.group(1) == last.group(1) and _joined(text, span.end, group[0].start)):
                break
            group.insert(0, span)
        values = [_formula_text(span).strip() for span in group]
        return formulas[-1].end, ", ".join(dict.fromkeys(values))
    last_line = text.rstrip().rsplit("\n", 1)[-1].strip().rstrip(".")
    if last_line and _is_formula(last_line):
        return len(text), last_line
    return None


def _last_number(text: str) -> str | None:
    """Fallback: the last number, or the last formula when no number comes after it."""
    numbers = list(_NUMBER.finditer(text))
    formula = _last_formula(text)
    if formula and (not numbers or numbers[-1].start() < formula[0]):
        return formula[1]
    if not numbers:
        return None
    last = numbers[-1]
    relation = _RELATION_TAIL.search(text, max(0, last.start() - 12), last.start())
    return (relation.group(0) if relation else "") + last.group(0)


def clean(answer: str) -> str:
    """Strip markdown and math delimiters, a trailing period and a trailing ``(in words)`` note."""
    answer = answer.replace("**", "").replace("__", "")
    answer = re.sub(r"(?<!\\)\$", "", answer)
    answer = re.sub(r"(?<=\S)\s+\([A-Za-z][A-Za-z ]*\)\s*\.?\s*$", "", answer)
    answer = strip_wrappers(answer)
    while answer.endswith(")") and answer.count(")") > answer.count("("):
        answer = answer[:-1].rstrip()
    return answer


def extract_answer(response: str | None, strict: bool = False) -> str | None:
    """The final answer in ``response`` as a string, or None when there is none (see module doc)."""
    if not response:
        return None
    if "<" in response:
        response = _SPECIAL_TOKENS.sub("", response)
    region = answer_region(response, strict)
    if region is None:
        return None
    boxes = find_boxes(region)  # boxes anywhere (linear scan); the heuristics below see the tail only
    last_box = _join_hedges(boxes, region)
    offset = max(0, len(region) - TAIL_CHARS)
    tail = region[offset:]
    if boxes and boxes[-1].kind == "unclosed":
        if strict:
            return None
        last_box = boxes[-1] if boxes[-1].text.strip() else last_box
    if strict:
        return (clean(last_box.text) or None) if last_box else None
    candidates = [_Candidate(c.start + offset, c.end + offset, c.text, c.kind)
                  for c in _markers(tail) if last_box is None or _looks_like_math(c.text)]
    if last_box is not None:
        candidates.append(last_box)
    for candidate in sorted(candidates, key=lambda c: c.start, reverse=True):
        answer = clean(candidate.text)
        if answer:
            return answer
    if "<think>" in response and "</think>" not in response:
        return None  # unfinished thinking: a stray number there is not an answer
    number = _last_number(tail)
    return (clean(number) or None) if number else None
