"""Byte-level BPE demo: train on a small corpus, then check that the merges, the vocabulary and the
token ids are exactly those of the Hugging Face `tokenizers` BPE trainer with the same settings,
that decoding round-trips, and that special tokens stay whole.

    python appendixes/bpe_tokenizer/main.py
    python appendixes/bpe_tokenizer/main.py --vocab-size 1000 --pattern gpt2 --min-frequency 2 --plot bpe.png
    python appendixes/bpe_tokenizer/main.py --qwen-tokenizer ../shared/data/qwen3-0.6b/tokenizer.json

Exits non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import unicodedata
from pathlib import Path

from bpe import BYTE_TO_CHAR, PATTERNS, ByteLevelBPE, pre_split, train, train_by_recounting

HERE = Path(__file__).resolve().parent
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EXTRA_TEXTS = [
    "<|im_start|>user\nWhat is 17 + 25?<|im_end|>\n<|im_start|>assistant\n17 + 25 = 42<|im_end|><|endoftext|>",
    "Unseen words still encode: antidisestablishmentarianism, Zyzzyva, 🦜, Ωmega, e\u0301.",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\r\nwindows\r\nnewlines\n\n\n",
    "",
    "<|im_end|><|im_end|>x<|endoftext|",
]
FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f"  ({detail})" if detail else ""))
    if not ok:
        FAILURES.append(name)


def reference_tokenizer(texts, vocab_size, min_frequency, pattern):
    """The same training with Hugging Face `tokenizers`: byte-level, no normalizer, full byte alphabet."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def merges_of(tokenizer) -> list[tuple[str, str]]:
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def first_difference(a: list, b: list) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def shown(token: str) -> str:
    return token.replace("Ġ", "·").replace("Ċ", "⏎")


def compare_with_qwen(path: str, texts: list[str]) -> None:
    from tokenizers import Tokenizer

    print(f"7. Our encoder with a real tokenizer.json: {path}")
    ours = ByteLevelBPE.from_tokenizer_json(path)
    reference = Tokenizer.from_file(path)
    print(f"   {len(ours.vocab):,} tokens, {len(ours.merges):,} merges, {len(ours.added)} added tokens, "
          f"NFC normalizer: {ours.nfc}")
    mismatches = [t for t in texts if reference.encode(t).ids != ours.encode(t)]
    check("same ids as tokenizers on every test string", not mismatches,
          f"{len(texts) - len(mismatches)}/{len(texts)} strings")
    normalized = [unicodedata.normalize("NFC", t) if ours.nfc else t for t in texts]
    check("decode(encode(text)) == text (after NFC, which is not undone: 'e' + U+0301 comes back as 'é')",
          all(ours.decode(ours.encode(t)) == n for t, n in zip(texts, normalized)))
    sample = "The answer is 1234. Don't panic! 数学"
    print(f"   {sample!r} -> {[shown(t) for t in ours.tokens(sample)]}")
    rng = random.Random(0)
    bad = 0
    for _ in range(200):
        ids = [rng.randrange(len(ours.vocab)) for _ in range(rng.randint(1, 8))]
        bad += reference.decode(ids, skip_special_tokens=False) != ours.decode(ids)
    check("decoding 200 random id sequences equals tokenizers' decode", bad == 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(HERE / "corpus.txt"), help="training text, one document per paragraph")
    parser.add_argument("--vocab-size", type=int, default=600)
    parser.add_argument("--min-frequency", type=int, default=0)
    parser.add_argument("--pattern", choices=sorted(PATTERNS), default="qwen", help="the pre-split regex")
    parser.add_argument("--save", metavar="PATH", help="write our tokenizer.json here")
    parser.add_argument("--qwen-tokenizer", metavar="PATH", help="also compare our encoder on a real tokenizer.json")
    parser.add_argument("--plot", metavar="PATH", help="save the count of each merge and the compression")
    args = parser.parse_args()
    pattern = PATTERNS[args.pattern]

    text = Path(args.corpus).read_text(encoding="utf-8")
    documents = [d for d in text.split("\n\n") if d.strip()]
    tests = documents + EXTRA_TEXTS

    print("1. Bytes as printable characters (so that merges are between strings)")
    for char in (" ", "\n", "a", "é", "🙂"):
        as_bytes = char.encode("utf-8")
        print(f"   {char!r:>6} -> bytes {list(as_bytes)} -> {''.join(BYTE_TO_CHAR[b] for b in as_bytes)!r}")

    print(f"2. The {args.pattern} pre-split: merges never cross these boundaries")
    sample = "We'll pay $1,234.50 for 3 books,  don't we?\n\nYes!"
    print(f"   {sample!r}\n   -> {pre_split(sample, pattern)}")

    print(f"3. Training on {len(documents)} documents ({len(text.encode()):,} bytes), vocab {args.vocab_size}, "
          f"min_frequency {args.min_frequency}, specials {SPECIAL_TOKENS}")
    ours = train(documents, args.vocab_size, SPECIAL_TOKENS, args.min_frequency, pattern)
    reference = reference_tokenizer(documents, args.vocab_size, args.min_frequency, pattern)
    print(f"   {len(ours.merges)} merges; the first ten (count when merged):")
    for (a, b), count in list(zip(ours.merges, ours.merge_counts))[:10]:
        print(f"     {shown(a)!r:>10} + {shown(b)!r:<10} ({count})")
    check("same vocabulary (token -> id) as tokenizers' BpeTrainer", ours.vocab == reference.get_vocab(),
          f"{len(ours.vocab)} tokens")
    theirs = merges_of(reference)
    difference = first_difference(ours.merges, theirs)
    check("same merges, in the same order", difference is None,
          "identical" if difference is None else f"first difference at merge {difference}")
    mismatches = [t for t in tests if reference.encode(t).ids != ours.encode(t)]
    check("same ids for every document and test string", not mismatches, f"{len(tests)} strings")
    ties = sum(1 for i in range(1, len(ours.merge_counts)) if ours.merge_counts[i] == ours.merge_counts[i - 1])
    print(f"   {ties} of {len(ours.merges)} merges were made at the same count as the one before: among equal counts,\n"
          "   only the tie-break decides the order")

    print("4. Tie-breaking, the detail that makes the merges identical")
    slow = train_by_recounting(documents, args.vocab_size, SPECIAL_TOKENS, args.min_frequency, pattern, tie_break="ids")
    reused = len(ours.merges) - len({a + b for a, b in ours.merges})
    if reused:
        print(f"   ({reused} token(s) produced by two different merges: the recounting version may order them "
              "differently, so it is not compared)")
    else:
        check("recount-everything with ties to the smaller (left id, right id) gives the same merges", slow == ours.merges)
    naive = train_by_recounting(documents, args.vocab_size, SPECIAL_TOKENS, args.min_frequency, pattern,
                                tie_break="first_seen")
    where = first_difference(naive, theirs)
    print(f"   ties to the first pair seen (max(counts, key=counts.get)): "
          + ("same merges here" if where is None else
             f"diverges at merge {where}: {naive[where]} instead of {theirs[where]}"))

    print("5. Round trips and special tokens")
    failed = [t for t in tests if ours.decode(ours.encode(t)) != t]
    check("decode(encode(text)) == text for every string", not failed)
    chat = EXTRA_TEXTS[0]
    ids = ours.encode(chat)
    special_ids = {ours.vocab[t] for t in SPECIAL_TOKENS}
    check("each special token is one id", sum(i in special_ids for i in ids) == 5,
          f"{[ours.vocab[t] for t in SPECIAL_TOKENS]} = {SPECIAL_TOKENS}")
    check("skip_special_tokens drops them and only them",
          ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)
          == "user\nWhat is 17 + 25?\nassistant\n17 + 25 = 42")
    print(f"   {chat[:40]!r}... -> {[shown(t) for t in ours.tokens(chat)][:14]}...")
    rng = random.Random(0)
    bad = 0
    for _ in range(300):
        random_ids = [rng.randrange(len(ours.vocab)) for _ in range(rng.randint(1, 6))]
        bad += ours.decode(random_ids) != reference.decode(random_ids, skip_special_tokens=False)
    check("decoding random ids (often invalid UTF-8) gives tokenizers' text, U+FFFD included", bad == 0)

    print("6. Saving as tokenizer.json")
    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.save) if args.save else Path(tmp) / "tokenizer.json"
        ours.save(path)
        loaded = Tokenizer.from_file(str(path))
        check("tokenizers loads our file and encodes identically",
              all(loaded.encode(t).ids == ours.encode(t) for t in tests))
        again = ByteLevelBPE.from_tokenizer_json(path)
        check("and so does our own loader", again.merges == ours.merges and again.vocab == ours.vocab
              and all(again.encode(t) == ours.encode(t) for t in tests))
        if args.save:
            print(f"   saved {path}")
    n_bytes = sum(len(t.encode()) for t in documents)
    n_tokens = sum(len(ours.encode(t)) for t in documents)
    print(f"   compression on the corpus: {n_bytes / n_tokens:.2f} bytes per token ({n_tokens} tokens)")

    if args.qwen_tokenizer:
        compare_with_qwen(args.qwen_tokenizer, tests)

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sizes = sorted({300, 400, 500, args.vocab_size, 800, 1200})
        ratios = []
        for size in sizes:
            model = train(documents, size, SPECIAL_TOKENS, args.min_frequency, pattern)
            ratios.append(n_bytes / sum(len(model.encode(t)) for t in documents))
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        left.plot(range(len(ours.merge_counts)), ours.merge_counts)
        left.set_yscale("log")
        left.set_xlabel("merge index")
        left.set_ylabel("pair count when merged")
        left.set_title("merge counts never increase")
        right.plot(sizes, ratios, marker="o")
        right.set_xlabel("vocabulary size")
        right.set_ylabel("bytes per token on the corpus")
        right.set_title("compression versus vocabulary size")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"saved {args.plot}")

    if FAILURES:
        print(f"FAILED: {', '.join(FAILURES)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
