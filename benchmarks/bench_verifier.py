"""Verifier benchmark: ours vs Math-Verify vs a naive last-answer string match, in one run.

Measures
  1. throughput (responses/s) on (a) MATH-500 self-grading and (b) a batch of synthetic
     model-style responses (GSM8K and MATH-500 styles, right and wrong);
  2. accuracy against the labels of ``verifier_suite.jsonl`` (model-style responses, including
     adversarial ones), with the number of time-outs.

Usage::

    REASONING_DATA_DIR=../shared/data python benchmarks/bench_verifier.py
    python benchmarks/bench_verifier.py --rebuild-suite   # regenerate verifier_suite.jsonl

Math-Verify is called as its README recommends: ``verify(parse(gold), parse(response))`` with the
gold wrapped in ``\\boxed{}`` so that its LaTeX extraction sees all of it. Its parsed golds are
cached (as an RL loop would), which favours it in the throughput numbers.

The suite is built from the public data by ``build_suite`` (seeded, so it is reproducible): real
MATH-500 solutions and GSM8K solutions with their final answer kept, rewritten into an
equivalent form, or replaced by a wrong one, plus hand-written adversarial cases. Labels come from
how each response was constructed, never from a grader.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import signal
import sys
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from companion.verifier import grade, grade_detailed, warm_up  # noqa: E402

SUITE_PATH = Path(__file__).with_name("verifier_suite.jsonl")
SEED = 20250101


# =========================================================================== data
def data_dir(argument: str | None) -> Path:
    folder = Path(argument or os.environ.get("REASONING_DATA_DIR", ROOT.parent / "shared" / "data"))
    for relative in ("gsm8k/test.jsonl", "math500/test.jsonl"):
        if not (folder / relative).exists():
            sys.exit(f"missing {folder / relative}: pass --data-dir or set REASONING_DATA_DIR")
    return folder


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def gsm8k_gold(record: dict) -> str:
    return record["answer"].split("####")[-1].strip().replace(",", "")


# =========================================================================== answer variants
def _int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"-?\d+", text) else None


def equivalent_forms(gold: str) -> list[str]:
    """Spellings that mean the same as ``gold`` (conservative: only rewrites known to be equal)."""
    forms: list[str] = []
    number = _int(gold)
    if number is not None:
        if abs(number) >= 1000:
            forms.append(f"{number:,}")
        forms += [f"{number}.0", f"x = {number}"]
    if match := re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", gold):
        sign, a, b = match.group(1), int(match.group(2)), int(match.group(3))
        forms += [f"{sign}{a}/{b}", f"{sign}\\dfrac{{{a}}}{{{b}}}", f"\\frac{{{sign}{a * 2}}}{{{b * 2}}}"]
        value = Fraction(a, b)
        if all(p in (2, 5) for p in _prime_factors(value.denominator)) and value.denominator <= 10000:
            forms.append(sign + _decimal(value))
    if match := re.fullmatch(r"(\d+)\^\\circ", gold):
        forms += [match.group(1), f"{match.group(1)} degrees"]
    if match := re.fullmatch(r"\\text\{([A-Za-z ]+)\}", gold):
        forms += [match.group(1), match.group(1).lower()]
    if match := re.fullmatch(r"(\d*)\s*\\sqrt\{(\d+)\}", gold):
        k = int(match.group(1) or 1)
        forms.append(f"\\sqrt{{{k * k * int(match.group(2))}}}")
    if "\\left" in gold:
        forms.append(gold.replace("\\left", "").replace("\\right", ""))
    if "\\dfrac" in gold:
        forms.append(gold.replace("\\dfrac", "\\frac"))
    if match := re.fullmatch(r"\\\$(\d+(?:\.\d\d)?)", gold):
        forms.append(f"{match.group(1)} dollars")
    if re.fullmatch(r"\(-?\d+,-?\d+\)", gold.replace(" ", "")):
        forms.append(gold.replace(" ", "").replace(",", ", "))
    if match := re.fullmatch(r"([a-z])\s*=\s*(.+)", gold):
        forms.append(match.group(2))
    if match := re.fullmatch(r"(\d+)\s*\\pi", gold):
        forms += [f"{match.group(1)}\u03c0", f"\\pi \\cdot {match.group(1)}"]
    if "pmatrix" in gold:
        forms.append(gold.replace("pmatrix", "bmatrix"))
    reordered = _reorder_terms(gold)
    if reordered:
        forms.append(reordered)
    return forms


def _reorder_terms(gold: str) -> str | None:
    """``8n^2 + 4n + 1`` → ``1 + 4n + 8n^2`` (only for brace-free sums of simple terms)."""
    if not re.fullmatch(r"-?[\w^ ]+(?:\s*[-+]\s*[\w^ ]+)+", gold):
        return None
    terms = re.findall(r"([-+]?)\s*([\w^ ]+?)\s*(?=[-+]|$)", gold.strip())
    signed = [("-" if sign == "-" else "+", term.strip()) for sign, term in terms if term.strip()]
    if len(signed) < 2:
        return None
    signed.reverse()
    text = " ".join(f"{sign} {term}" for sign, term in signed)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


def _prime_factors(n: int) -> set[int]:
    factors, p = set(), 2
    while n > 1 and p * p <= n:
        while n % p == 0:
            factors.add(p)
            n //= p
        p += 1
    if n > 1:
        factors.add(n)
    return factors


def _decimal(value: Fraction) -> str:
    """The exact decimal spelling of a fraction whose denominator has only the factors 2 and 5."""
    text = str(Decimal(value.numerator) / Decimal(value.denominator))
    assert Fraction(text) == value, (text, value)
    return text


def wrong_forms(gold: str, rng: random.Random) -> list[str]:
    """Answers that differ from ``gold``: a changed number, a flipped sign, a rounded value ..."""
    forms: list[str] = []
    number = _int(gold)
    if number is not None:
        forms += [str(number + rng.choice((1, -1, 2, 10))), str(number * 2 if number else 7)]
        if number:
            forms.append(str(-number))
    if match := re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", gold):
        a, b = int(match.group(2)), int(match.group(3))
        if a != b:
            forms.append(f"{match.group(1)}\\frac{{{b}}}{{{a}}}")
        value = Fraction(a, b) * (-1 if match.group(1) else 1)
        rounded = f"{float(value):.2f}"
        if Fraction(rounded) != value:
            forms.append(rounded)
    if "(" in gold and "]" in gold:
        forms.append(gold.replace("(", "[", 1))
    digits = re.search(r"\d+", gold)
    if digits:
        forms.append(gold[:digits.start()] + str(int(digits.group(0)) + 1) + gold[digits.end():])
    if match := re.fullmatch(r"\\text\{\(([A-E])\)\}", gold):
        forms.append(f"\\text{{({'ABCDE'[('ABCDE'.index(match.group(1)) + 1) % 5]})}}")
    if re.fullmatch(r"\\text\{[A-Za-z]+\}", gold) and "(" not in gold:
        forms.append("\\text{" + ("odd" if "even" in gold else "Alice") + "}")
    if gold in ("\\pi", "p - q", "\\cot x"):
        forms.append({"\\pi": "2\\pi", "p - q": "q - p", "\\cot x": "\\tan x"}[gold])
    return forms


# =========================================================================== suite construction
REASONING_NOISE = [
    "Let me double-check the arithmetic.", "This matches the constraint in the problem.",
    "Now we simplify.", "Putting everything together:", "So far so good.",
]


def _record(kind: str, style: str, response: str, gold: str, label: bool) -> dict:
    return {"style": style, "kind": kind, "response": response, "gold": gold, "label": label}


def gsm8k_cases(records: list[dict], rng: random.Random, count: int) -> list[dict]:
    """GSM8K-style responses from real solutions (calculator notes removed)."""
    cases = []
    for record in rng.sample(records, count):
        gold = gsm8k_gold(record)
        reasoning = re.sub(r"<<[^>]*>>", "", record["answer"].split("####")[0]).strip()
        wrong = str(int(gold) + rng.choice((1, -1, 3, 10, -10)))
        kind = rng.choice(["hash", "answer_is", "dollar", "boxed", "last_line", "decimal", "wrong_final",
                           "wrong_sign", "close", "early_box", "late_fix", "think", "think_wrong",
                           "truncated", "answer_units", "wrong_boxed", "boxed_dollar", "bold", "verify_after",
                           "final_header", "x_equals", "wrong_verify_after", "hash_dollar", "wrong_bold",
                           "steps_final", "wrong_steps_final", "think_plain"])
        cases.extend(_gsm8k_case(kind, reasoning, gold, wrong, rng))
    return cases


def _gsm8k_case(kind: str, reasoning: str, gold: str, wrong: str, rng: random.Random) -> list[dict]:
    with_commas = f"{int(gold):,}"
    simple = {
        "hash": (f"{reasoning}\n#### {gold}", True),
        "answer_is": (f"{reasoning}\nThe answer is {gold}.", True),
        "dollar": (f"{reasoning}\nThe answer is ${with_commas}.", True),
        "boxed": (f"{reasoning}\nTherefore, the final answer is $\\boxed{{{gold}}}$.", True),
        "decimal": (f"{reasoning}\nThe answer is {gold}.00", True),
        "answer_units": (f"{reasoning}\nThe answer is {with_commas} dollars.", True),
        "wrong_final": (f"{reasoning}\nThe answer is {wrong}.", False),
        "boxed_dollar": (f"{reasoning}\nThe total is $\\boxed{{\\${with_commas}}}$.", True),
        "bold": (f"{reasoning}\n\nSo the answer is **{with_commas}**.", True),
        "wrong_bold": (f"{reasoning}\n\nSo the answer is **{wrong}**.", False),
        "verify_after": (f"{reasoning}\nThe answer is {gold}.\nCheck: the steps above use "
                         f"{rng.randint(2, 9)} and {rng.randint(11, 99)}, which is consistent.", True),
        "wrong_verify_after": (f"{reasoning}\nThe answer is {wrong}.\nCheck: this agrees with {gold} "
                               f"from before.", False),
        "final_header": (f"{reasoning}\n\n**Final Answer:** ${gold}$", True),
        "x_equals": (f"Let x be the answer.\n{reasoning}\nSo $x = {gold}$.", True),
        "hash_dollar": (f"{reasoning}\n#### ${with_commas}", True),
        "steps_final": ("".join(f"Step {k + 1}: {line}\n" for k, line in enumerate(reasoning.splitlines()))
                        + f"Final answer: {gold}", True),
        "wrong_steps_final": ("".join(f"Step {k + 1}: {line}\n" for k, line in enumerate(reasoning.splitlines()))
                              + f"Final answer: {wrong}", False),
        "think_plain": (f"<think>\nLet me think. {reasoning}\n</think>\n\nShe has {with_commas} in the end, "
                        f"so the answer is {with_commas}.", True),
        "wrong_boxed": (f"{reasoning}\nSo the answer is \\boxed{{{wrong}}}.", False),
        "close": (f"{reasoning}\nThe answer is {gold}.5", False),
        "early_box": (f"Quick guess: \\boxed{{{gold}}}.\n{reasoning}\nWait, I need to subtract the extra "
                      f"cost. The answer is \\boxed{{{wrong}}}.", False),
        "late_fix": (f"Quick guess: \\boxed{{{wrong}}}.\nLet me verify.\n{reasoning}\n"
                     f"The answer is \\boxed{{{gold}}}.", True),
        "think": (f"<think>\n{reasoning}\nMaybe it is {wrong}? No.\n</think>\n\nThe answer is "
                  f"$\\boxed{{{gold}}}$.", True),
        "think_wrong": (f"<think>\n{reasoning}\n</think>\n\nThe answer is $\\boxed{{{wrong}}}$.", False),
    }
    if kind in simple:
        response, label = simple[kind]
        return [_record(kind, "gsm8k", response, gold, label)]
    if kind == "wrong_sign" and gold != "0":
        return [_record(kind, "gsm8k", f"{reasoning}\nThe answer is $\\boxed{{-{gold}}}$.", gold, False)]
    lines = reasoning.splitlines()
    numbers = re.findall(r"\d[\d,]*(?:\.\d+)?", lines[-1])
    if kind == "last_line" and numbers and numbers[-1].replace(",", "") == gold:
        return [_record(kind, "gsm8k", reasoning, gold, True)]
    if kind == "truncated" and len(lines) > 2:
        head = "\n".join(lines[:-1])
        cut = head[: max(20, int(len(head) * rng.uniform(0.4, 0.9)))]
        found = re.findall(r"\d[\d,]*(?:\.\d+)?", cut)
        if found and found[-1].replace(",", "") != gold:
            return [_record(kind, "gsm8k", cut, gold, False)]
    return []


def _replace_last_box(solution: str, content: str | None) -> str | None:
    """The solution with its last ``\\boxed{...}`` replaced by ``\\boxed{content}``; with
    ``content=None`` the box is removed and its inner text stays in place."""
    start = solution.rfind("\\boxed{")
    if start < 0:
        return None
    depth, end = 0, -1
    for i in range(start + 6, len(solution)):
        if solution[i] == "{":
            depth += 1
        elif solution[i] == "}":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        return None
    inner = solution[start + 7:end]
    replacement = f"\\boxed{{{content}}}" if content is not None else inner
    return solution[:start] + replacement + solution[end + 1:]


def math_cases(records: list[dict], rng: random.Random, count: int) -> list[dict]:
    """MATH-500-style responses from the real solutions."""
    cases = []
    for record in rng.sample(records, count):
        gold, solution = record["answer"], record["solution"]
        if "\\boxed{" not in solution:
            continue
        equal, wrong = equivalent_forms(gold), wrong_forms(gold, rng)
        kinds = ["as_is", "think", "minerva", "final_answer_header", "no_box_at_end"]
        kinds += ["equivalent"] * 2 if equal else []
        kinds += ["wrong", "wrong", "gold_in_reasoning", "early_vs_late", "late_vs_early", "hedge"] if wrong else []
        kind = rng.choice(kinds)
        case = _math_case(kind, solution, gold, rng.choice(equal) if equal else None,
                          rng.choice(wrong) if wrong else None)
        if case:
            cases.append(case)
    return cases


def _math_case(kind: str, solution: str, gold: str, same: str | None, other: str | None) -> dict | None:
    bare = _replace_last_box(solution, None)
    if kind == "as_is":
        return _record(kind, "math", solution, gold, True)
    if kind == "think":
        return _record(kind, "math", f"<think>\nLet me work through this.\n{bare}\n</think>\n\n{solution}", gold, True)
    if kind == "minerva":
        return _record(kind, "math", f"{bare}\nFinal Answer: The final answer is ${gold}$. I hope it is correct.",
                       gold, True)
    if kind == "no_box_at_end":
        # the box removed, its content left in place: only when it closes the solution
        end = solution.rstrip().rstrip("$.\\]) \n")
        if not end.endswith("}") or solution.rfind("\\boxed{") < len(solution) - len(gold) - 40:
            return None
        return _record(kind, "math", bare, gold, True)
    if kind == "final_answer_header":
        return _record(kind, "math", f"{bare}\n\n**Final Answer**\n\\[\n\\boxed{{{gold}}}\n\\]", gold, True)
    if kind == "equivalent":
        return _record(kind, "math", _replace_last_box(solution, same), gold, True)
    if kind == "wrong":
        return _record(kind, "math", _replace_last_box(solution, other), gold, False)
    if kind == "gold_in_reasoning":
        response = (f"{bare}\nHowever, I forgot to account for the last condition, which changes the result. "
                    f"Correcting for it, the answer is $\\boxed{{{other}}}$.")
        return _record(kind, "math", response, gold, False)
    if kind == "early_vs_late":
        response = f"My first attempt gives $\\boxed{{{other}}}$, but I made an error. Redoing it:\n{solution}"
        return _record(kind, "math", response, gold, True)
    if kind == "late_vs_early":
        response = f"{solution}\n\nWait, let me recheck the last step. Actually the answer is $\\boxed{{{other}}}$."
        return _record(kind, "math", response, gold, False)
    if kind == "hedge":
        response = f"{bare}\nThe answer is $\\boxed{{{gold}}}$ or $\\boxed{{{other}}}$."
        return _record(kind, "math", response, gold, False)
    return None


def adversarial_cases() -> list[dict]:
    """Hand-written edge cases: (kind, response, gold, label)."""
    rows = [
        ("empty", "", "5", False),
        ("empty", "   \n\n  ", "5", False),
        ("garbage", "asdkjh qwe zxc lkj", "5", False),
        ("garbage", "!!!!!!!!!!!!!!!!!!!!!!!!!!", "\\frac{1}{2}", False),
        ("garbage", "the the the the the the the the the the", "\\text{even}", False),
        ("garbage", "I cannot solve this problem.", "12", False),
        ("garbage", "\\boxed{}", "0", False),
        ("garbage", "<|im_end|><|endoftext|>", "7", False),
        ("unbalanced", "So the answer is \\boxed{\\frac{1}{2}", "\\frac{1}{2}", True),
        ("unbalanced", "The answer is \\boxed{42", "42", True),
        ("unbalanced", "The answer is \\boxed{41", "42", False),
        ("unbalanced", "\\boxed{5}} is the answer", "5", True),
        ("unbalanced", "\\boxed{{{{{{{{{{{{{{{{{{{{", "5", False),
        ("unbalanced", "The answer is $\\boxed{\\sqrt{2}$.", "\\sqrt{3}", False),
        ("enormous", "The answer is $\\boxed{10^{10^{10}}}$.", "10", False),
        ("enormous", "The answer is $\\boxed{9^{9^{9^{9}}}}$.", "81", False),
        ("enormous", "The answer is $\\boxed{1000000!}$.", "120", False),
        ("enormous", "\\boxed{\\dfrac{5^{\\left(5^{\\left(5^{\\left(5^5\\right)}\\right)} - 4\\right)} - 5}{16}}",
         "\\frac{5}{16}", False),
        ("enormous", "\\boxed{2^{2^{2^{2^{2^{2}}}}}}", "65536", False),
        ("enormous", "\\boxed{" + "1+" * 2000 + "1}", "2001", False),
        ("enormous", "\\boxed{" + "(" * 300 + "1" + ")" * 300 + "}", "2", False),
        ("enormous", "The answer is " + "9" * 5000 + ".", "9", False),
        ("enormous", "x" * 60_000 + " The answer is 3.", "3", True),
        ("enormous", "\\boxed{3}" + " filler" * 10_000, "3", True),
        ("enormous", "Final Answer:" * 3000 + " 7", "7", True),
        ("enormous", "\\[" * 3000 + " so the answer is 7.", "7", True),
        ("enormous", "The answer is" + " " * 20_000 + "x", "5", False),
        ("unicode", "The answer is \u22125.", "-5", True),
        ("unicode", "The answer is \u221a2.", "\\sqrt{2}", True),
        ("unicode", "So the area is 8\u03c0.", "8\\pi", True),
        ("unicode", "The answer is \u00bd.", "\\frac{1}{2}", True),
        ("unicode", "Hence x \u2264 3.", "(-\\infty, 3]", True),
        ("unicode", "The answer is 2\u00d73 = 6.", "6", True),
        ("unicode", "The answer is \u22125.", "5", False),
        ("close", "The answer is \\boxed{0.33}.", "\\frac{1}{3}", False),
        ("close", "The answer is \\boxed{0.333}.", "\\frac{1}{3}", False),
        ("close", "The answer is \\boxed{3.14}.", "\\pi", False),
        ("close", "The answer is \\boxed{1.414}.", "\\sqrt{2}", False),
        ("close", "The answer is \\boxed{2.33}.", "\\frac{7}{3}", False),
        ("close", "The answer is \\boxed{18.9}.", "\\$18.90", True),
        ("close", "The answer is \\boxed{0.5}.", "\\frac{1}{2}", True),
        ("close", "The answer is \\boxed{2.3333333}.", "\\frac{7}{3}", True),
        ("intervals", "The solution set is \\boxed{[1, 4]}.", "(1, 4]", False),
        ("intervals", "The solution set is \\boxed{(1, 4]}.", "(1, 4]", True),
        ("intervals", "So $x \\in \\boxed{(-\\infty, 2) \\cup (3, \\infty)}$.",
         "(-\\infty, 2) \\cup (3, \\infty)", True),
        ("intervals", "Thus \\boxed{x > 5}.", "(5,\\infty)", True),
        ("intervals", "Thus \\boxed{x \\geq 5}.", "(5,\\infty)", False),
        ("tuples", "The point is \\boxed{(8, -2)}.", "(8,-2)", True),
        ("tuples", "The point is \\boxed{(-2, 8)}.", "(8,-2)", False),
        ("sets", "The solutions are \\boxed{1, -2}.", "-2,1", True),
        ("sets", "The solutions are $x = 1$ and $x = -2$, so \\boxed{-2, 1}.", "1,-2", True),
        ("sets", "The solutions are \\boxed{1}.", "1,-2", False),
        ("choice", "The correct option is \\boxed{B}.", "\\text{(B)}", True),
        ("choice", "The answer is (C).", "\\text{(C)}", True),
        ("choice", "The answer is \\boxed{\\text{(D)}}.", "\\text{(C)}", False),
        ("text", "So the answer is \\boxed{\\text{Evelyn}}.", "\\text{Evelyn}", True),
        ("text", "So the answer is \\boxed{Navin}.", "\\text{Evelyn}", False),
        ("text", "It is an \\boxed{\\text{ellipse}}.", "\\text{ellipse}", True),
        ("percent", "The answer is \\boxed{25\\%}.", "25", True),
        ("percent", "The probability is \\boxed{0.25}.", "\\frac{1}{4}", True),
        ("units", "The area is \\boxed{15 \\text{ cm}^2}.", "15\\mbox{ cm}^2", True),
        ("units", "The area is \\boxed{16 \\text{ cm}^2}.", "15\\mbox{ cm}^2", False),
        ("units", "The angle is \\boxed{90^\\circ}.", "90^\\circ", True),
        ("units", "The cost is \\boxed{\\$32,\\!348}.", "\\$32,\\!348", True),
        ("bases", "In base 5 this is \\boxed{204_5}.", "204_5", True),
        ("bases", "In base 5 this is \\boxed{54}.", "204_5", False),
        ("equations", "The plane is \\boxed{-5x + 7y - 11z - 4 = 0}.", "5x - 7y + 11z + 4 = 0", True),
        ("equations", "The line is \\boxed{y = 2x - 3}.", "y = 2x + 3", False),
        ("equations", "The answer is \\boxed{x = 5}.", "5", True),
        ("answer_is_clear", "\\boxed{12}\n\nI hope the answer is clear.", "12", True),
        ("gold_in_reasoning", "We first get 42, then subtract 2 to get \\boxed{40}.", "42", False),
        ("gold_in_reasoning", "First we find 42 apples. Then half are eaten, so 21 remain.\n#### 21", "42", False),
        ("wrong_sign", "The answer is \\boxed{-\\frac{3}{8}}.", "\\frac{3}{8}", False),
        ("wrong_sign", "The answer is \\boxed{3-2i}.", "3+2i", False),
        ("think_only", "<think>The answer is clearly \\boxed{5}</think>", "5", False),
        ("think_only", "<think>hmm</think>\n\nThe answer is \\boxed{5}.", "5", True),
        ("think_only", "<think>Let me compute 2 + 3 = 5 and then", "5", False),
        ("hedge", "The answer is either 4 or 6.", "4", False),
        ("hedge", "It could be \\boxed{3} or \\boxed{-3}.", "3", False),
        ("hedge", "So $x = \\boxed{3}$ or $x = \\boxed{-3}$.", "3, -3", True),
        ("not", "The answer is 5, not 6.", "5", True),
        ("not", "The answer is 6, not 5.", "5", False),
        ("parenthetical", "The answer is 12 (twelve).", "12", True),
        ("chain", "The answer is 2 \u00d7 3 = 6.", "6", True),
        ("chain", "Total: 4 + 5 = 9 apples.", "9", True),
        ("chain", "Total: 4 + 5 = 10 apples.", "9", False),
        ("negative", "The temperature is \\boxed{-5}.", "-5", True),
        ("negative", "The change is (-5).", "-5", True),
        ("words", "The answer is five.", "5", True),
        ("words", "The answer is six.", "5", False),
        ("percent", "The answer is 50%.", "0.5", True),
        ("percent", "The answer is 5%.", "0.5", False),
        ("sqrt", "The side is \\boxed{\\sqrt8}.", "2\\sqrt{2}", True),
        ("sqrt", "The side is \\boxed{\\sqrt{6}}.", "2\\sqrt{2}", False),
        ("fraction", "So $p = \\dfrac{9}{12}$.", "\\frac{3}{4}", True),
        ("fraction", "So $p = \\dfrac{9}{16}$.", "\\frac{3}{4}", False),
        ("mixed", "The answer is $2\\frac{1}{3}$ cups.", "\\frac{7}{3}", True),
        ("mixed", "The answer is $2\\frac{1}{4}$ cups.", "\\frac{7}{3}", False),
        ("complex", "Thus $z = \\boxed{2i + 3}$.", "3+2i", True),
        ("scientific", "The answer is $6.72 \\times 10^{-5}$.", ".0000672", True),
        ("scientific", "The answer is $6.72 \\times 10^{-4}$.", ".0000672", False),
        ("matrix", "\\boxed{\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}}",
         "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", True),
        ("matrix", "\\boxed{\\begin{bmatrix} 1 & 3 \\\\ 2 & 4 \\end{bmatrix}}",
         "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", False),
    ]
    return [_record(kind, "adversarial", response, gold, label) for kind, response, gold, label in rows]


def build_suite(folder: Path) -> list[dict]:
    rng = random.Random(SEED)
    cases = gsm8k_cases(read_jsonl(folder / "gsm8k" / "test.jsonl"), rng, 230)
    cases += math_cases(read_jsonl(folder / "math500" / "test.jsonl"), rng, 260)
    cases += adversarial_cases()
    for index, case in enumerate(cases):
        case["id"] = f"suite-{index:04d}"
    return cases


def synthetic_batch(folder: Path, size: int) -> list[dict]:
    """A throughput batch with the same generators (another seed)."""
    rng = random.Random(SEED + 1)
    gsm8k, math = read_jsonl(folder / "gsm8k" / "test.jsonl"), read_jsonl(folder / "math500" / "test.jsonl")
    batch: list[dict] = []
    while len(batch) < size:
        batch += gsm8k_cases(gsm8k, rng, 50) + math_cases(math, rng, 50)
    return batch[:size]


# =========================================================================== graders
class MathVerify:
    """Math-Verify with the gold parsed once per distinct gold."""

    def __init__(self) -> None:
        from math_verify import parse, verify

        logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every time-out it hits
        self.parse, self.verify = parse, verify
        self.golds: dict[str, list] = {}

    def __call__(self, response: str, gold: str) -> bool:
        if gold not in self.golds:
            self.golds[gold] = self.parse("\\boxed{" + gold + "}")
        return bool(self.verify(self.golds[gold], self.parse(response)))


def naive(response: str, gold: str) -> bool:
    """Last ``\\boxed{}`` (no nesting) or last number, compared as a string with the gold."""
    boxes = re.findall(r"\\boxed\{([^{}]*)\}", response)
    if boxes:
        answer = boxes[-1]
    else:
        numbers = re.findall(r"-?\d+(?:\.\d+)?", response)
        answer = numbers[-1] if numbers else ""
    return answer.strip() == gold.strip()


def ours(response: str, gold: str) -> bool:
    return grade(response, gold)


# =========================================================================== measurements
class _Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Alarm


def timed_accuracy(grader, suite: list[dict], limit: float) -> dict:
    """Accuracy, time-outs (a grader running past ``limit`` is stopped and counted wrong) and errors."""
    correct = timeouts = errors = 0
    wrong_ids: list[str] = []
    signal.signal(signal.SIGALRM, _on_alarm)
    for case in suite:
        started = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            verdict = grader(case["response"], case["gold"])
        except _Alarm:
            verdict, timeouts = None, timeouts + 1
        except Exception:  # noqa: BLE001 - a grader that raises is counted as wrong
            verdict, errors = None, errors + 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if verdict is not None and time.perf_counter() - started > limit:
            timeouts += 1
        if verdict == case["label"]:
            correct += 1
        else:
            wrong_ids.append(case["id"])
    return {"accuracy": correct / len(suite), "timeouts": timeouts, "errors": errors, "wrong": wrong_ids}


def throughput(grader, pairs: list[tuple[str, str]]) -> float:
    started = time.perf_counter()
    for response, gold in pairs:
        grader(response, gold)
    return len(pairs) / (time.perf_counter() - started)


def our_timeouts(suite: list[dict]) -> int:
    return sum(grade_detailed(c["response"], c["gold"]).reason == "timeout" for c in suite)


# =========================================================================== main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder with gsm8k/ and math500/ (default: $REASONING_DATA_DIR)")
    parser.add_argument("--rebuild-suite", action="store_true", help="regenerate verifier_suite.jsonl and exit")
    parser.add_argument("--synthetic", type=int, default=1000, help="size of the synthetic throughput batch")
    parser.add_argument("--limit", type=float, default=10.0, help="seconds before a grader counts as timed out")
    parser.add_argument("--show-errors", action="store_true", help="print the suite cases each grader gets wrong")
    args = parser.parse_args()
    folder = data_dir(args.data_dir)
    if args.rebuild_suite:
        suite = build_suite(folder)
        SUITE_PATH.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in suite))
        print(f"wrote {len(suite)} cases to {SUITE_PATH}")
        return
    suite = read_jsonl(SUITE_PATH)
    math_verify = MathVerify()
    warm_up()
    golds = [r["answer"] for r in read_jsonl(folder / "math500" / "test.jsonl")]
    self_pairs = [(f"So the answer is $\\boxed{{{g}}}$.", g) for g in golds]
    synthetic = [(c["response"], c["gold"]) for c in synthetic_batch(folder, args.synthetic)]
    rows = []
    for name, grader in (("ours", ours), ("math-verify", math_verify), ("naive", naive)):
        grader(*self_pairs[0])  # warm caches and imports outside the timing
        rows.append((name, throughput(grader, self_pairs), throughput(grader, synthetic),
                     timed_accuracy(grader, suite, args.limit)))
    print(f"suite: {len(suite)} labelled responses ({sum(c['label'] for c in suite)} correct); "
          f"synthetic batch: {len(synthetic)}; MATH-500 self-grading: {len(self_pairs)}")
    print(f"{'grader':<12} {'MATH-500 self/s':>16} {'synthetic/s':>12} {'suite acc':>10} {'timeouts':>9} {'errors':>7}")
    for name, self_rate, synthetic_rate, result in rows:
        print(f"{name:<12} {self_rate:>16,.0f} {synthetic_rate:>12,.0f} {result['accuracy']:>10.3f} "
              f"{result['timeouts']:>9} {result['errors']:>7}")
    ours_row, mv_row = rows[0], rows[1]
    print(f"throughput ratio ours / math-verify: MATH-500 self-grading {ours_row[1] / mv_row[1]:.1f}x, "
          f"synthetic responses {ours_row[2] / mv_row[2]:.1f}x")
    print(f"our 'timeout' verdicts on the suite: {our_timeouts(suite)}")
    if args.show_errors:
        by_id = {c["id"]: c for c in suite}
        for name, _, _, result in rows[:2]:
            for case_id in result["wrong"]:
                case = by_id[case_id]
                print(f"[{name}] {case_id} {case['kind']} label={case['label']} gold={case['gold']!r} "
                      f"response=...{case['response'][-120:]!r}")


if __name__ == "__main__":
    main()
