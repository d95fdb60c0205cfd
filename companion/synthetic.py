"""Synthetic multi-step arithmetic word problems, shaped like GSM8K records.

The tiny model this project trains (``data/tiny-reasoner``) learns to reason on these problems,
and the chapters measure chain of thought, voting, self-refinement and RL on them. Each problem
is built together with its solution: a list of steps, one operation per step, where each operand
is either a number stated in the question or the result of an earlier step. Because the
structure is kept, the answer can be recomputed and checked, and a step can be altered on
purpose (an "arithmetic slip") with the error carried through the later steps.

Three families of stories give the variety of GSM8K in miniature:

- ``timeline``: a stock changes over time (buys, gives away, doubles, keeps a third, shares).
- ``comparison``: a chain of "6 more than", "twice as many as", "half as many as".
- ``groups``: sums of products (pens of sheep, purchases at a price, pages per day), with an
  optional last step (change from a bill, some are sold, split into teams of 4).

All intermediate results are positive integers no larger than ``Limits.max_value``, and every
division is exact. Everything is drawn from a ``random.Random`` passed in, so a seed fixes the
output; no global random state is used.

    >>> import random
    >>> problem = generate_problem(random.Random(0), steps=3)
    >>> problem.answer == problem.steps[-1].result
    True
"""
from __future__ import annotations

import functools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

# How often each operation is drawn when several fit.
OP_WEIGHTS = {"+": 3, "-": 3, "×": 2, "÷": 2}
OPERATIONS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "×": lambda a, b: a * b,
    "÷": lambda a, b: a // b,
}

SPLIT_SIZES = {"train": 16000, "validation": 500, "test": 1000}
# Test first, so that validation excludes test and train excludes both.
SPLIT_ORDER = ("test", "validation", "train")
DEFAULT_SEED = 0
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "arith"


# ---------------------------------------------------------------------------------------------
# Structured problems
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Operand:
    """A number used by a step: stated in the question (``step is None``) or an earlier result."""

    value: int
    step: int | None = None


@dataclass(frozen=True)
class Step:
    """One operation of a solution, with the short clause that says what it computes."""

    left: Operand
    op: str
    right: Operand
    result: int
    clause: str

    def line(self, left: int | None = None, right: int | None = None, result: int | None = None) -> str:
        """The solution line, e.g. ``Ava buys 5 more: 12 + 5 = 17.``

        Other values may be written in (an attempt with a slip shows wrong numbers).
        """
        left = self.left.value if left is None else left
        right = self.right.value if right is None else right
        result = self.result if result is None else result
        return f"{self.clause}: {left} {self.op} {right} = {result}."

    def equation(self) -> str:
        return f"{self.left.value} {self.op} {self.right.value} = {self.result}"


@dataclass(frozen=True)
class Limits:
    """Difficulty knobs: the size of stated numbers, of factors and divisors, and of results."""

    max_operand: int = 20
    max_factor: int = 5
    max_value: int = 200


@dataclass(frozen=True)
class SyntheticProblem:
    question: str
    steps: tuple[Step, ...]
    family: str

    @property
    def answer(self) -> int:
        return self.steps[-1].result

    def solution_lines(self) -> list[str]:
        return [step.line() for step in self.steps]

    def solution(self) -> str:
        """The GSM8K-style solution: one line per step, then ``#### answer``."""
        return "\n".join(self.solution_lines()) + f"\n#### {self.answer}"

    def to_record(self, problem_id: str) -> dict:
        return {
            "id": problem_id,
            "question": self.question,
            "solution": self.solution(),
            "answer": str(self.answer),
            "steps": len(self.steps),
        }


def recompute(steps) -> list[int]:
    """Evaluate the steps from their operands alone, checking each one; returns the results.

    Raises ``ValueError`` if an operand does not match the result it refers to, a division is
    not exact, a stored result is wrong, or a value is not a positive integer.
    """
    results: list[int] = []
    for index, step in enumerate(steps):
        values = []
        for operand in (step.left, step.right):
            if operand.step is not None:
                if not 0 <= operand.step < index or results[operand.step] != operand.value:
                    raise ValueError(f"step {index + 1}: operand {operand} does not match an earlier result")
            values.append(operand.value)
        if step.op == "÷" and (values[1] == 0 or values[0] % values[1]):
            raise ValueError(f"step {index + 1}: {values[0]} ÷ {values[1]} is not exact")
        value = OPERATIONS[step.op](*values)
        if value != step.result or value < 1:
            raise ValueError(f"step {index + 1}: {step.equation()} should give {value}")
        results.append(value)
    return results


class _Retry(Exception):
    """The random choices broke a limit; draw again."""


class _Work:
    """The steps of a solution being written, checked against the limits as they are added."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.steps: list[Step] = []

    def apply(self, left: Operand | int, op: str, right: Operand | int, clause: str) -> Operand:
        left, right = _operand(left), _operand(right)
        if op == "÷" and left.value % right.value:
            raise _Retry
        result = OPERATIONS[op](left.value, right.value)
        if not 1 <= result <= self.limits.max_value:
            raise _Retry
        self.steps.append(Step(left, op, right, result, clause))
        return Operand(result, len(self.steps) - 1)


def _operand(value: Operand | int) -> Operand:
    return value if isinstance(value, Operand) else Operand(value)


# ---------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------
FEMALE_NAMES = (
    "Ava", "Mia", "Emma", "Lily", "Zoe", "Nora", "Ruby", "Chloe", "Grace", "Ella", "Sofia", "Hana",
    "Priya", "Aisha", "Mei", "Lucia", "Fatima", "Olivia", "Isla", "Maya", "Leah", "Yuki", "Amara",
    "Rosa", "Nina", "Sara", "Julia", "Ines", "Keiko", "Tara", "Elena", "Zara",
)
MALE_NAMES = (
    "Tom", "Ben", "Leo", "Sam", "Max", "Omar", "Raj", "Liam", "Noah", "Jack", "Luca", "Hugo", "Kenji",
    "Diego", "Ali", "Ethan", "Oscar", "Felix", "Ravi", "Marco", "Jonas", "Kofi", "Ivan", "Theo",
    "Adam", "Mateo", "Arjun", "Hiro", "Malik", "Owen", "Pablo", "Finn",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh")
COLORS = ("red", "blue", "green", "yellow", "white", "black", "orange", "purple")
FRACTIONS = {2: "half", 3: "a third", 4: "a quarter"}
TIMES = {2: "twice"}


@dataclass(frozen=True)
class Person:
    name: str
    subject: str  # "She" / "He"
    object: str  # "her" / "him"
    possessive: str  # "her" / "his"


def _person(rng: random.Random, exclude=()) -> Person:
    female = rng.random() < 0.5
    names = [n for n in (FEMALE_NAMES if female else MALE_NAMES) if n not in exclude]
    name = rng.choice(names)
    return Person(name, "She", "her", "her") if female else Person(name, "He", "him", "his")


def _other_name(rng: random.Random, *people: Person) -> str:
    taken = {p.name for p in people}
    return rng.choice([n for n in FEMALE_NAMES + MALE_NAMES if n not in taken])


def _fill(template: str, **words) -> str:
    """``str.format`` that leaves the first letter of a sentence upper case."""
    text = template.format(**words)
    return text[0].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# Family 1: a stock that changes over time
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stock:
    """Who holds the stock, what it is, and how it can grow or shrink (sentence, clause)."""

    items: tuple[str, ...]
    gains: tuple[tuple[str, str], ...]
    losses: tuple[tuple[str, str], ...]
    owner: str = "person"  # "person" or a place such as "bakery"
    actor: str = ""  # who acts for a place: "the baker"
    share: tuple[str, str, str] = (
        "Finally, {S} shares the {items} equally among {n} friends.",
        "How many {items} does each friend get?",
        "Each friend gets",
    )


PERSON_GAINS = (
    ("{S} buys {n} more {items}.", "{S} buys {n} more"),
    ("{friend} gives {O} {n} {items}.", "{friend} gives {O} {n}"),
    ("{S} gets {n} more {items} from {friend}.", "{S} gets {n} more"),
)
PERSON_LOSSES = (
    ("{S} gives {n} {items} to {friend}.", "{S} gives {n} to {friend}"),
    ("{S} sells {n} {items}.", "{S} sells {n}"),
)
STOCKS = (
    Stock(
        ("stickers", "marbles", "stamps", "seashells", "beads", "buttons", "postcards", "toy cars", "trading cards"),
        PERSON_GAINS + (("{S} finds {n} more {items}.", "{S} finds {n} more"),
                        ("{S} wins {n} {items} in a game.", "{S} wins {n}")),
        PERSON_LOSSES + (("{S} loses {n} {items}.", "{S} loses {n}"),
                         ("{S} trades away {n} {items}.", "{S} trades away {n}")),
    ),
    Stock(
        ("apples", "oranges", "strawberries", "plums", "peaches", "cherries"),
        PERSON_GAINS + (("{S} picks {n} more {items}.", "{S} picks {n} more"),),
        PERSON_LOSSES + (("{S} eats {n} {items}.", "{S} eats {n}"),
                         ("{S} uses {n} {items} to make a pie.", "{S} uses {n} for a pie")),
    ),
    Stock(
        ("cookies", "cupcakes", "muffins", "brownies", "pancakes"),
        PERSON_GAINS + (("{S} bakes {n} more {items}.", "{S} bakes {n} more"),),
        PERSON_LOSSES + (("{S} eats {n} {items}.", "{S} eats {n}"),
                         ("{S} packs {n} {items} for a picnic.", "{S} packs {n} for a picnic")),
    ),
    Stock(
        ("pencils", "crayons", "notebooks", "erasers", "paper clips", "markers"),
        PERSON_GAINS,
        PERSON_LOSSES + (("{S} loses {n} {items}.", "{S} loses {n}"),
                         ("{S} lends {n} {items} to {friend}.", "{S} lends {n} to {friend}")),
    ),
    Stock(
        ("loaves of bread", "muffins", "bagels", "croissants", "pies"),
        (("The baker makes {n} more {items}.", "The baker makes {n} more"),
         ("The bakery bakes another {n} {items}.", "It bakes {n} more")),
        (("Customers buy {n} {items}.", "Customers buy {n}"),
         ("The bakery sells {n} {items} in the morning.", "It sells {n} in the morning"),
         ("{n} {items} are sold before lunch.", "{n} are sold before lunch")),
        owner="bakery",
        actor="the baker",
        share=("At closing time, the bakery packs the {items} equally into {n} boxes.",
               "How many {items} go in each box?", "Each box gets"),
    ),
    Stock(
        ("books", "magazines", "comic books", "maps"),
        (("The library receives {n} more {items}.", "The library receives {n} more"),
         ("Readers donate {n} {items}.", "Readers donate {n}")),
        (("Readers borrow {n} {items}.", "Readers borrow {n}"),
         ("The library gives away {n} old {items}.", "It gives away {n}")),
        owner="library",
        actor="the librarian",
        share=("Then the library puts the {items} equally on {n} shelves.",
               "How many {items} are on each shelf?", "Each shelf gets"),
    ),
    Stock(
        ("chickens", "ducks", "goats", "sheep", "rabbits"),
        (("The farmer buys {n} more {items}.", "The farmer buys {n} more"),
         ("{n} more {items} are born on the farm.", "{n} more are born")),
        (("The farmer sells {n} {items}.", "The farmer sells {n}"),
         ("The farmer gives {n} {items} to a neighbor.", "The farmer gives away {n}")),
        owner="farm",
        actor="the farmer",
        share=("Then the farmer moves the {items} equally into {n} pens.",
               "How many {items} are in each pen?", "Each pen gets"),
    ),
    Stock(
        ("toy robots", "board games", "kites", "puzzles", "yo-yos"),
        (("A delivery brings {n} more {items}.", "A delivery brings {n} more"),
         ("The store orders {n} more {items}.", "The store orders {n} more")),
        (("The store sells {n} {items}.", "The store sells {n}"),
         ("Shoppers buy {n} {items}.", "Shoppers buy {n}")),
        owner="toy store",
        actor="the store owner",
        share=("Then the store sets out the {items} equally on {n} tables.",
               "How many {items} are on each table?", "Each table gets"),
    ),
)
# (sentence, clause, factor); a factor of None is drawn, from 3 up, when the story is written.
GROWTH = (
    ("Then the number of {items} doubles.", "The number doubles", 2),
    ("Then the number of {items} triples.", "The number triples", 3),
    ("A month later, there are {n} times as many {items} as before.", "{n} times as many", None),
    ("Then {S_lower} gets enough {items} to have {n} times as many.", "{S} has {n} times as many", None),
)
SHRINK = (
    ("Then {S_lower} keeps only half of the {items}.", "{S} keeps half", 2),
    ("Then {S_lower} keeps only a third of the {items}.", "{S} keeps a third", 3),
    ("Then {S_lower} splits the {items} equally into {n} groups and keeps one group.",
     "{S} keeps one of {n} groups", None),
)


def _timeline(rng: random.Random, steps: int, limits: Limits) -> tuple[str, list[Step]]:
    """A stock that grows and shrinks, step by step; asks how much is left or each one's share."""
    stock = rng.choice(STOCKS)
    items = rng.choice(stock.items)
    person = _person(rng)
    if stock.owner == "person":
        words = {"S": person.subject, "O": person.object, "S_lower": person.subject.lower()}
        opening = f"{person.name} has {{x}} {items}."
        question = f"How many {items} does {person.name} have now?"
    else:
        words = {"S": _fill(stock.actor), "O": "it", "S_lower": stock.actor}
        opening = f"A {stock.owner} has {{x}} {items}."
        question = f"How many {items} does the {stock.owner} have now?"
    work = _Work(limits)
    total = Operand(rng.randint(max(4, limits.max_operand // 4), max(8, 2 * limits.max_operand)))
    sentences = [opening.format(x=total.value)]
    share_at_end = rng.random() < 0.3
    for index in range(steps):
        last = index == steps - 1
        if last and share_at_end and (divisor := _divisor(rng, total.value, limits)):
            sentence, question, clause = stock.share
            sentences.append(_fill(sentence, S=words["S_lower"], items=items, n=divisor))
            question = question.format(items=items)
            total = work.apply(total, "÷", divisor, clause)
            continue
        friend = _other_name(rng, person)
        sentence, clause, op, n = _timeline_event(rng, stock, total.value, limits)
        fill = dict(words, items=items, n=n, friend=friend)
        sentences.append(_fill(sentence, **fill))
        total = work.apply(total, op, n, _fill(clause, **fill))
    sentences.append(question)
    return " ".join(sentences), work.steps


def _timeline_event(rng: random.Random, stock: Stock, value: int, limits: Limits):
    """One feasible change to ``value``: (sentence, clause, operation, number).

    The operation is drawn first (``OP_WEIGHTS``), among those that keep the value in range,
    so that how often each appears does not depend on how many templates it has.
    """
    factor_cap = min(limits.max_factor, limits.max_value // value)
    divisors = [d for d in range(2, limits.max_factor + 1) if value % d == 0]
    templates = {
        "+": stock.gains if value + 2 <= limits.max_value else (),
        "-": stock.losses if value >= 3 else (),
        "×": [t for t in GROWTH if (t[2] or 3) <= factor_cap],
        "÷": [t for t in SHRINK if (t[2] in divisors if t[2] else max(divisors, default=0) >= 3)],
    }
    ops = [op for op, options in templates.items() if options]
    op = rng.choices(ops, weights=[OP_WEIGHTS[op] for op in ops])[0]
    template = rng.choice(templates[op])
    if op in "+-":
        n = _amount(rng, value, op, limits)
    elif op == "×":
        n = template[2] or rng.randint(3, factor_cap)
    else:
        n = template[2] or rng.choice([d for d in divisors if d >= 3])
    return template[0], template[1], op, n


def _amount(rng: random.Random, value: int, op: str, limits: Limits) -> int:
    """A number of at least 2 (so nouns stay plural) to add to or take from ``value``."""
    room = limits.max_value - value if op == "+" else value - 1
    if room < 2:
        raise _Retry
    return rng.randint(2, min(limits.max_operand, room))


def _divisor(rng: random.Random, value: int, limits: Limits) -> int | None:
    divisors = [d for d in range(2, limits.max_factor + 1) if value % d == 0 and value // d >= 1]
    return rng.choice(divisors) if divisors else None


# ---------------------------------------------------------------------------------------------
# Family 2: a chain of comparisons
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chain:
    """How to name the entities compared and how to say that one holds an amount."""

    kind: str  # "people", "containers", "days", "groups"
    verb: str  # third person singular: "has", "holds", "reads", "collects"
    verb_base: str  # "have", "hold", "read", "collect"
    items: tuple[str, ...]


CHAINS = (
    Chain("people", "has", "have",
          ("stickers", "marbles", "stamps", "coins", "seashells", "books", "pencils", "trading cards")),
    Chain("containers", "holds", "hold", ("marbles", "candies", "beads", "buttons", "cookies", "shells", "coins")),
    Chain("days", "reads", "read", ("pages",)),
    Chain("days", "bakes", "bake", ("cookies", "muffins", "rolls")),
    Chain("days", "sells", "sell", ("cups of lemonade", "tickets", "newspapers")),
    Chain("days", "runs", "run", ("laps",)),
    Chain("days", "folds", "fold", ("paper cranes",)),
    Chain("groups", "collects", "collect", ("cans", "bottles", "books", "coats")),
    Chain("groups", "plants", "plant", ("trees", "flowers", "seeds")),
    Chain("groups", "sells", "sell", ("tickets", "raffle tickets", "cookies")),
)
CONTAINERS = ("box", "jar", "bag", "basket", "bucket", "tin")
GROUP_NOUNS = ("class", "team", "club", "group")


def _comparison(rng: random.Random, steps: int, limits: Limits) -> tuple[str, list[Step]]:
    """Each entity is compared to the one before; asks about the last one, or two together."""
    chain = rng.choice(CHAINS)
    items = rng.choice(chain.items)
    together = steps >= 2 and rng.random() < 0.3
    relations = steps - 1 if together else steps
    names, refs, person = _chain_entities(rng, chain, relations + 1)
    work = _Work(limits)
    amounts = [Operand(rng.randint(max(4, limits.max_operand // 4), max(8, 2 * limits.max_operand)))]
    sentences = [_chain_opening(chain, names[0], person, items, amounts[0].value)]
    for index in range(1, relations + 1):
        op, n, phrase = _relation(rng, amounts[-1].value, limits, items)
        sentences.append(_chain_sentence(chain, names[index], person, f"{phrase} {refs[index - 1]}"))
        subject = names[index] if chain.kind != "days" else f"On {names[index]}"
        amounts.append(work.apply(amounts[-1], op, n, _fill(subject)))
    if together:
        first = rng.randrange(0, relations)
        sentences.append(_chain_question(chain, [names[first], names[-1]], person, items))
        work.apply(amounts[first], "+", amounts[-1], "Together")
    else:
        sentences.append(_chain_question(chain, [names[-1]], person, items))
    return " ".join(sentences), work.steps


def _chain_entities(rng: random.Random, chain: Chain, count: int):
    """Names of the entities (as sentence subjects), how to refer to them, and the person if any."""
    person = _person(rng)
    if chain.kind == "people":
        names = rng.sample(FEMALE_NAMES + MALE_NAMES, count)
        return names, names, None
    if chain.kind == "containers":
        container = rng.choice(CONTAINERS)
        names = [f"the {color} {container}" for color in rng.sample(COLORS, count)]
        return names, names, None
    if chain.kind == "days":
        start = rng.randrange(0, len(DAYS) - count + 1)
        names = list(DAYS[start:start + count])
        return names, [f"on {day}" for day in names], person
    noun = rng.choice(GROUP_NOUNS)
    names = [f"the {ordinal} {noun}" for ordinal in ORDINALS[:count]]
    return names, names, None


def _chain_opening(chain: Chain, name: str, person: Person | None, items: str, amount: int) -> str:
    if chain.kind == "days":
        return f"On {name}, {person.name} {chain.verb} {amount} {items}."
    return _fill(f"{name} {chain.verb} {amount} {items}.")


def _chain_sentence(chain: Chain, name: str, person: Person | None, relation: str) -> str:
    if chain.kind == "days":
        return f"On {name}, {person.subject.lower()} {chain.verb} {relation}."
    return _fill(f"{name} {chain.verb} {relation}.")


def _chain_question(chain: Chain, names: list[str], person: Person | None, items: str) -> str:
    if chain.kind == "days":
        when = " and ".join(names)
        together = " together" if len(names) > 1 else ""
        return f"How many {items} does {person.name} {chain.verb_base} on {when}{together}?"
    if len(names) == 1:
        return f"How many {items} does {names[0]} {chain.verb_base}?"
    return f"How many {items} do {names[0]} and {names[1]} {chain.verb_base} together?"


def _relation(rng: random.Random, value: int, limits: Limits, items: str) -> tuple[str, int, str]:
    """A feasible relation to ``value``: (operation, number, phrase up to "than"/"as")."""
    options = []
    if value + 2 <= limits.max_value:
        options.append("+")
    if value >= 3:
        options.append("-")
    factor_cap = min(limits.max_factor, limits.max_value // value)
    if factor_cap >= 2:
        options.append("×")
    divisors = [d for d in FRACTIONS if d <= limits.max_factor and value % d == 0]
    if divisors:
        options.append("÷")
    op = rng.choices(options, weights=[OP_WEIGHTS[op] for op in options])[0]
    if op == "+":
        n = _amount(rng, value, op, limits)
        return op, n, f"{n} more {items} than"
    if op == "-":
        n = _amount(rng, value, op, limits)
        return op, n, f"{n} fewer {items} than"
    if op == "×":
        n = rng.randint(2, factor_cap)
        return op, n, f"{TIMES.get(n, f'{n} times')} as many {items} as"
    n = rng.choice(divisors)
    return op, n, f"{FRACTIONS[n]} as many {items} as"


# ---------------------------------------------------------------------------------------------
# Family 3: sums of products
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Groups:
    """Groups of equal size: units ("pens") holding items ("sheep"); what can happen at the end."""

    units: tuple[str, ...]
    items: tuple[str, ...]
    opening: str  # introduces the groups, e.g. "A farm has {groups}."
    total: str  # question about the total
    minus: tuple[str, str, str]  # (sentence with {n}, question, clause) for "some leave"
    divide: tuple[str, str, str]  # (sentence with {n}, question, clause) for "split into groups of n"


GROUPS = (
    Groups(("pens", "barns", "fields", "sheds"), ("sheep", "goats", "cows", "pigs", "hens"),
           "A farm has {groups}.", "How many {items} are on the farm?",
           ("The farmer sells {n} {items}.", "How many {items} are left on the farm?", "Left after the sale"),
           ("The farmer moves all of them in trucks that carry {n} {items} each, every truck full.",
            "How many trucks are needed?", "Trucks")),
    Groups(("trays", "boxes", "baskets", "racks"), ("cookies", "muffins", "rolls", "cupcakes"),
           "A bakery makes {groups}.", "How many {items} does the bakery make?",
           ("{n} {items} are sold before noon.", "How many {items} are left?", "Left"),
           ("Then all the {items} are packed into bags of {n}.", "How many bags are filled?", "Bags")),
    Groups(("shelves", "carts", "crates", "boxes"), ("books", "magazines", "comic books"),
           "A library has {groups}.", "How many {items} does the library have?",
           ("Readers borrow {n} {items}.", "How many {items} are still in the library?", "Still in the library"),
           ("The librarian stacks all of them in piles of {n}.", "How many piles are there?", "Piles")),
    Groups(("rows", "beds", "pots", "boxes"), ("tulips", "roses", "carrots", "lettuces", "daisies"),
           "A garden has {groups}.", "How many {items} are in the garden?",
           ("Rabbits eat {n} {items}.", "How many {items} are left?", "Left"),
           ("The gardener picks all of them and ties them in bunches of {n}.", "How many bunches are there?",
            "Bunches")),
    Groups(("classrooms", "buses", "vans", "groups"), ("students", "children"),
           "A school trip has {groups}.", "How many {items} go on the trip?",
           ("{n} {items} go home early.", "How many {items} are still on the trip?", "Still on the trip"),
           ("At the museum, all of them split into teams of {n}.", "How many teams are there?", "Teams")),
    Groups(("bags", "jars", "boxes", "tins"), ("marbles", "beads", "buttons", "candies"),
           "{name} has {groups}.", "How many {items} does {name} have?",
           ("{name} gives {n} {items} to {friend}.", "How many {items} does {name} have left?", "Left"),
           ("{name} shares all of them equally among {n} friends.", "How many {items} does each friend get?",
            "Each friend gets")),
)
PURCHASES = ("notebooks", "pens", "apples", "sandwiches", "comic books", "toy cars", "candles", "mugs", "plants",
             "tickets", "balloons", "socks")
RATES = (("reads", "pages", "a day", "days", "read"),
         ("walks", "kilometers", "a day", "days", "walk"),
         ("earns", "dollars", "an hour", "hours", "earn"),
         ("knits", "rows", "an hour", "hours", "knit"),
         ("types", "lines", "a minute", "minutes", "type"))


def _groups(rng: random.Random, steps: int, limits: Limits) -> tuple[str, list[Step]]:
    """Sum of products with an optional last step; the story is chosen among three kinds."""
    kind = rng.choice((_sets_of_items, _shopping, _rates))
    return kind(rng, steps, limits)


def _parts(steps: int) -> tuple[int, bool]:
    """How many products and whether a final step follows: 2k-1 steps, plus one if even."""
    return (steps + 1) // 2, steps % 2 == 0


def _products(rng: random.Random, count: int, limits: Limits, max_each: int | None = None):
    """``count`` pairs (number of groups, size of each) whose products and sum fit the limits."""
    max_each = max_each or limits.max_operand
    pairs = [(rng.randint(2, limits.max_factor), rng.randint(2, max(2, max_each))) for _ in range(count)]
    if sum(a * b for a, b in pairs) > limits.max_value:
        raise _Retry
    return pairs


def _add_up(work: _Work, products: list[Operand], clause: str) -> Operand:
    """Add the products one by one: the last addition is the total."""
    total = products[0]
    for index, part in enumerate(products[1:], start=2):
        total = work.apply(total, "+", part, clause if index == len(products) else "Subtotal")
    return total


def _sets_of_items(rng: random.Random, steps: int, limits: Limits) -> tuple[str, list[Step]]:
    """E.g. a farm with 3 pens of 12 sheep and 2 barns of 20 sheep; some are sold at the end."""
    setting = rng.choice(GROUPS)
    count, final = _parts(steps)
    items = rng.choice(setting.items)
    units = rng.sample(setting.units, count)
    person = _person(rng)
    words = {"name": person.name, "friend": _other_name(rng, person), "items": items}
    work = _Work(limits)
    pairs = _products(rng, count, limits)
    phrases = [f"{a} {unit} with {b} {items} each" for (a, b), unit in zip(pairs, units)]
    sentences = [_fill(setting.opening, groups=_join(phrases), **words)]
    products = [work.apply(a, "×", b, _fill(f"{items} in the {unit}")) for (a, b), unit in zip(pairs, units)]
    total = _add_up(work, products, "In all")
    question = setting.total
    if final:
        question = _final_step(rng, work, total, setting, sentences, words, limits)
    sentences.append(_fill(question, **words))
    return " ".join(sentences), work.steps


def _final_step(rng, work: _Work, total: Operand, setting: Groups, sentences: list[str], words, limits) -> str:
    """Either take some away or split the total evenly; returns the question to ask."""
    divisor = _divisor(rng, total.value, limits)
    if divisor and rng.random() < 0.5:
        sentence, question, clause = setting.divide
        n = divisor
        work.apply(total, "÷", divisor, clause)
    else:
        sentence, question, clause = setting.minus
        n = _amount(rng, total.value, "-", limits)
        work.apply(total, "-", n, clause)
    sentences.append(_fill(sentence, n=n, **words))
    return question


def _shopping(rng: random.Random, steps: int, limits: Limits) -> tuple[str, list[Step]]:
    """Purchases at a unit price; at the end, change from a bill or the cost split among friends."""
    count, final = _parts(steps)
    person = _person(rng)
    goods = rng.sample(PURCHASES, count)
    work = _Work(limits)
    pairs = _products(rng, count, limits, max_each=max(2, limits.max_operand // 2))
    phrases = [f"{a} {good} for ${b} each" for (a, b), good in zip(pairs, goods)]
    sentences = [f"{person.name} buys {_join(phrases)}."]
    products = [work.apply(a, "×", b, _fill(good)) for (a, b), good in zip(pairs, goods)]
    total = _add_up(work, products, "Total cost")
    question = f"How many dollars does {person.name} spend?"
    if final:
        question = _shopping_end(rng, work, total, person, sentences, limits)
    sentences.append(question)
    return " ".join(sentences), work.steps


def _shopping_end(rng, work: _Work, total: Operand, person: Person, sentences: list[str], limits: Limits) -> str:
    people = _divisor(rng, total.value, limits)
    if people and rng.random() < 0.4:
        sentences.append(f"{person.subject} splits the cost equally among {people} people, "
                         f"{person.object}self included.")
        work.apply(total, "÷", people, "Each person pays")
        return "How many dollars does each of them pay?"
    bills = [b for b in (10, 20, 50, 100, 200, 500, 1000) if total.value < b <= limits.max_value]
    if bills and rng.random() < 0.5:
        bill = rng.choice(bills[:2])
        sentences.append(f"{person.subject} pays with a ${bill} bill.")
        work.apply(bill, "-", total, "Change")
        return f"How many dollars of change does {person.subject.lower()} get?"
    if total.value >= limits.max_value:
        raise _Retry
    money = rng.randint(total.value + 1, min(limits.max_value, total.value + limits.max_operand))
    # Name the money first; the purchase sentence then refers back with a pronoun.
    sentences[0] = sentences[0].replace(person.name, person.subject, 1)
    sentences.insert(0, f"{person.name} has ${money}.")
    work.apply(money, "-", total, "Money left")
    return f"How many dollars does {person.name} have left?"


def _rates(rng: random.Random, steps: int, limits: Limits) -> tuple[str, list[Step]]:
    """A rate over several periods, e.g. 12 pages a day for 3 days, then 20 pages a day for 2 days."""
    verb, items, per, periods, verb_base = rng.choice(RATES)
    count, final = _parts(steps)
    person = _person(rng)
    work = _Work(limits)
    pairs = _products(rng, count, limits)
    phrases = [f"{b} {items} {per} for {a} {periods}" for a, b in pairs]
    sentences = [f"{person.name} {verb} {', then '.join(phrases)}."]
    products = [work.apply(a, "×", b, _fill(f"{items} at {b} {per}")) for a, b in pairs]
    total = _add_up(work, products, "In all")
    question = f"How many {items} does {person.name} {verb_base} in all?"
    if final:
        if total.value >= limits.max_value:
            raise _Retry
        goal = rng.randint(total.value + 1, min(limits.max_value, total.value + limits.max_operand))
        sentences.append(f"{person.subject} wants to reach {goal} {items}.")
        work.apply(goal, "-", total, "Still to go")
        question = f"How many more {items} does {person.subject.lower()} need?"
    sentences.append(question)
    return " ".join(sentences), work.steps


def _join(phrases: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


# ---------------------------------------------------------------------------------------------
# Problems and splits
# ---------------------------------------------------------------------------------------------
FAMILIES = {"timeline": _timeline, "comparison": _comparison, "groups": _groups}
MAX_STEPS = 6


def generate_problem(rng: random.Random, steps: int = 3, max_operand: int = Limits.max_operand, *,
                     max_factor: int = Limits.max_factor, max_value: int = Limits.max_value,
                     family: str | None = None) -> SyntheticProblem:
    """One problem whose solution has exactly ``steps`` operations.

    ``max_operand`` bounds the numbers added or subtracted and the starting amounts,
    ``max_factor`` the multipliers and divisors, ``max_value`` every intermediate result. The
    defaults (those of ``Limits``, and of the shipped splits) are sized for the tiny model: with
    stated numbers up to 50, factors up to 9 and results up to 999 it got most sums wrong.
    """
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    limits = Limits(max_operand, max_factor, max_value)
    for _ in range(1000):
        name = family or rng.choice(sorted(FAMILIES))
        try:
            question, solution = FAMILIES[name](rng, steps, limits)
        except _Retry:
            continue
        recompute(solution)
        return SyntheticProblem(question, tuple(solution), name)
    raise RuntimeError(f"could not draw a {steps}-step problem within {limits}")


def normalize_question(text: str) -> str:
    """Lower case, words and numbers only: the key used to keep splits apart."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def generate_problems(n: int, seed, steps_range=(1, MAX_STEPS), max_operand: int = Limits.max_operand,
                      exclude=frozenset(), **knobs) -> list[SyntheticProblem]:
    """``n`` distinct problems, step counts balanced over ``steps_range``, in shuffled order.

    Questions whose normalized text is in ``exclude`` (or already drawn) are drawn again, which
    is how the splits are kept disjoint.
    """
    rng = random.Random(f"arith-{seed}")
    low, high = steps_range
    seen = set(exclude)
    problems = []
    for index in range(n):
        steps = low + index % (high - low + 1)
        while True:
            problem = generate_problem(rng, steps, max_operand, **knobs)
            key = normalize_question(problem.question)
            if key not in seen:
                break
        seen.add(key)
        problems.append(problem)
    rng.shuffle(problems)
    return problems


def generate_split(n: int, seed, steps_range=(1, MAX_STEPS), max_operand: int = Limits.max_operand, *,
                   split: str = "train", exclude=frozenset(), **knobs) -> list[dict]:
    """GSM8K-shaped records ``{"id", "question", "solution", "answer", "steps"}``."""
    problems = generate_problems(n, seed, steps_range, max_operand, exclude, **knobs)
    return [problem.to_record(f"arith-{split}-{i:05d}") for i, problem in enumerate(problems, start=1)]


def _disjoint_splits(sizes=None, seed: int = DEFAULT_SEED):
    """Yield ``(split, problems)`` in the order test, validation, train.

    Each split has its own random stream and excludes the questions of the splits before it.
    """
    sizes = dict(SPLIT_SIZES, **(sizes or {}))
    exclude: set[str] = set()
    for name in SPLIT_ORDER:
        problems = generate_problems(sizes[name], f"{seed}-{name}", exclude=exclude)
        exclude |= {normalize_question(p.question) for p in problems}
        yield name, problems


def split_problems(split: str, sizes=None, seed: int = DEFAULT_SEED) -> list[SyntheticProblem]:
    """The structured problems behind ``data/arith/<split>.jsonl``, regenerated from the seed."""
    if split not in SPLIT_ORDER:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_ORDER)}")
    return list(_cached_splits(tuple(sorted((sizes or {}).items())), seed)[split])


@functools.lru_cache(maxsize=2)
def _cached_splits(sizes: tuple, seed: int) -> dict[str, tuple[SyntheticProblem, ...]]:
    """All splits at once (a few seconds), kept: training asks for train and validation."""
    return {name: tuple(problems) for name, problems in _disjoint_splits(dict(sizes), seed)}


def all_splits(sizes=None, seed: int = DEFAULT_SEED) -> dict[str, list[dict]]:
    """Records of every split, disjoint by normalized question."""
    return {
        name: [p.to_record(f"arith-{name}-{i:05d}") for i, p in enumerate(problems, start=1)]
        for name, problems in _disjoint_splits(sizes, seed)
    }


def write_splits(out_dir=DEFAULT_DATA_DIR, sizes=None, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    """Write ``<out_dir>/{train,validation,test}.jsonl``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, records in all_splits(sizes, seed).items():
        path = out_dir / f"{name}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(path)
        paths[name] = path
    return paths


def read_split(split: str, data_dir=DEFAULT_DATA_DIR) -> list[dict]:
    with (Path(data_dir) / f"{split}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


if __name__ == "__main__":
    for split_name, written in write_splits().items():
        print(f"{split_name}: {written} ({written.stat().st_size / 1e6:.2f} MB)")
