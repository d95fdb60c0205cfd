"""Byte-level BPE, as in GPT-2 and Qwen: training, encoding, decoding, special tokens.

    text --split special tokens--> segments --regex pre-split--> pieces --UTF-8--> bytes
         --bytes as printable characters--> symbols --apply merges by rank--> tokens --> ids

The trainer reproduces the Hugging Face `tokenizers` BpeTrainer exactly (same merges, same ids),
which depends on how it breaks ties between pairs of equal count: the pair of smaller
(left id, right id) wins, where ids are vocabulary positions (special tokens first, then the
byte alphabet in code-point order of its printable characters, then merges in creation order).
Needs `regex` (for \\p{L} and \\p{N} in the pre-split patterns); no `tokenizers`.
"""
from __future__ import annotations

import heapq
import json
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import regex

# GPT-2's pre-split: contractions, letters, numbers, other symbols, each with an optional leading space.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Qwen2/Qwen3's: case-insensitive contractions, a letter run may take one leading non-letter
# (space or punctuation), digits one at a time, newlines grouped apart from other whitespace.
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
PATTERNS = {"gpt2": GPT2_PATTERN, "qwen": QWEN_PATTERN}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from the 256 byte values to printable characters.

    Printable Latin-1 bytes map to themselves; the other 68 (control characters, space, ...) to
    code points 256 and up, in byte order. So a space is 'Ġ' (U+0120) and a newline 'Ċ' (U+010A).
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {char: byte for byte, char in BYTE_TO_CHAR.items()}
BYTE_ALPHABET = sorted(BYTE_TO_CHAR.values())  # code-point order, as the trainer sorts it


def pre_split(text: str, pattern: str) -> list[str]:
    """Cut text into pieces that merges never cross ("isolated": matches and any gaps between them)."""
    pieces, position = [], 0
    for match in regex.finditer(pattern, text):
        if match.start() > position:
            pieces.append(text[position:match.start()])
        if match.end() > match.start():
            pieces.append(match.group())
        position = match.end()
    if position < len(text):
        pieces.append(text[position:])
    return pieces


def to_symbols(piece: str) -> str:
    """A piece's UTF-8 bytes, each written as its printable character."""
    return "".join(BYTE_TO_CHAR[b] for b in piece.encode("utf-8"))


def count_words(texts, pattern: str) -> Counter:
    """How often each pre-split piece occurs, in byte-character form: the trainer's input."""
    words = Counter()
    for text in texts:
        words.update(to_symbols(piece) for piece in pre_split(text, pattern))
    return words


def initial_vocab(words: Counter, special_tokens, byte_alphabet: bool) -> tuple[list[str], dict[str, int]]:
    """Special tokens first, then every character (sorted by code point)."""
    id_to_token = []
    for token in special_tokens:
        if token not in id_to_token:
            id_to_token.append(token)
    chars = {c for word in words for c in word} | (set(BYTE_ALPHABET) if byte_alphabet else set())
    for c in sorted(chars):
        if c not in id_to_token:
            id_to_token.append(c)
    return id_to_token, {token: i for i, token in enumerate(id_to_token)}


def merge_word(symbols: list[int], a: int, b: int, new_id: int) -> list[tuple[tuple[int, int], int]]:
    """Replace each (a, b) left to right in place; return the pair-count changes it causes."""
    changes = []
    i = 0
    while i < len(symbols) - 1:
        if symbols[i] == a and symbols[i + 1] == b:
            if i > 0:
                changes += [((symbols[i - 1], a), -1), ((symbols[i - 1], new_id), 1)]
            symbols[i:i + 2] = [new_id]
            if i + 1 < len(symbols):
                changes += [((b, symbols[i + 1]), -1), ((new_id, symbols[i + 1]), 1)]
        i += 1
    return changes


def train(texts, vocab_size: int, special_tokens=(), min_frequency: int = 0, pattern: str = QWEN_PATTERN,
          byte_alphabet: bool = True) -> "ByteLevelBPE":
    """Learn merges until the vocabulary has ``vocab_size`` entries (or no pair occurs often enough).

    The algorithm of `tokenizers`' BpeTrainer: count every adjacent pair once, keep the candidates
    in a max-heap ordered by (count, then smaller pair of ids), and after each merge update only
    the counts of pairs that changed. Heap entries are not updated in place: an entry whose stored
    count is out of date is pushed back with the current count when it reaches the top.
    """
    word_counts = count_words(texts, pattern)
    id_to_token, token_to_id = initial_vocab(word_counts, special_tokens, byte_alphabet)
    words = [[token_to_id[c] for c in word] for word in word_counts]
    counts = list(word_counts.values())

    pair_counts: defaultdict[tuple[int, int], int] = defaultdict(int)
    where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words that contain it
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += counts[i]
            where[pair].add(i)
    # heapq is a min-heap: (-count, left id, right id) puts the largest count, then the smallest pair, first.
    # A running number makes entries unique, so that the position sets are never compared.
    serial = 0
    heap = []
    for pair, positions in where.items():
        heap.append((-pair_counts[pair], pair[0], pair[1], serial, positions))
        serial += 1
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    merge_counts: list[int] = []  # how often each merged pair occurred when it was merged
    while len(id_to_token) < vocab_size and heap:
        negative_count, a, b, _, positions = heapq.heappop(heap)
        current = pair_counts[(a, b)]
        if -negative_count != current:  # stale: re-queue with the true count
            heapq.heappush(heap, (-current, a, b, serial, positions))
            serial += 1
            continue
        if current < 1 or current < min_frequency:
            break
        token = id_to_token[a] + id_to_token[b]
        new_id = token_to_id.get(token)
        if new_id is None:  # the same string can come from two different merges; it keeps one id
            new_id = len(id_to_token)
            id_to_token.append(token)
            token_to_id[token] = new_id
        merges.append((a, b))
        merge_counts.append(current)
        created: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
        for i in positions:
            for pair, change in merge_word(words[i], a, b, new_id):
                pair_counts[pair] += change * counts[i]
                if change > 0:
                    created[pair].add(i)
        for pair, new_positions in created.items():
            if pair_counts[pair] > 0:
                heapq.heappush(heap, (-pair_counts[pair], pair[0], pair[1], serial, new_positions))
                serial += 1
    tokenizer = ByteLevelBPE(dict(token_to_id), [(id_to_token[a], id_to_token[b]) for a, b in merges],
                             special_tokens=list(special_tokens), pattern=pattern)
    tokenizer.merge_counts = merge_counts
    return tokenizer


def train_by_recounting(texts, vocab_size: int, special_tokens=(), min_frequency: int = 0,
                        pattern: str = QWEN_PATTERN, tie_break: str = "ids") -> list[tuple[str, str]]:
    """The textbook algorithm, slow and obvious: recount all pairs, merge the best one, repeat.

    ``tie_break="ids"`` picks the smallest (left id, right id) among the most frequent pairs, as
    `tokenizers` does; ``"first_seen"`` picks the pair met first while counting, as
    ``max(counts, key=counts.get)`` does in many tutorials. Returns the merges.
    """
    word_counts = count_words(texts, pattern)
    id_to_token, token_to_id = initial_vocab(word_counts, special_tokens, True)
    words = [([token_to_id[c] for c in word], count) for word, count in word_counts.items()]
    merges = []
    while len(id_to_token) < vocab_size:
        pair_counts: dict[tuple[int, int], int] = {}
        for symbols, count in words:
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] = pair_counts.get(pair, 0) + count
        if not pair_counts:
            break
        if tie_break == "ids":
            best = max(pair_counts, key=lambda p: (pair_counts[p], -p[0], -p[1]))
        else:
            best = max(pair_counts, key=pair_counts.get)
        if pair_counts[best] < max(1, min_frequency):
            break
        token = id_to_token[best[0]] + id_to_token[best[1]]
        if token not in token_to_id:
            token_to_id[token] = len(id_to_token)
            id_to_token.append(token)
        merges.append((id_to_token[best[0]], id_to_token[best[1]]))
        for symbols, _ in words:
            merge_word(symbols, best[0], best[1], token_to_id[token])
    return merges


class ByteLevelBPE:
    """A trained (or loaded) byte-level BPE tokenizer."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], special_tokens=(),
                 pattern: str = QWEN_PATTERN, nfc: bool = False, added_tokens: dict[str, bool] | None = None):
        self.vocab = dict(vocab)
        self.id_to_token = {i: token for token, i in self.vocab.items()}
        self.merges = list(merges)
        self.pattern = pattern
        self.nfc = nfc  # Qwen's tokenizer.json normalizes text to Unicode NFC first
        # Added tokens are matched in the raw text before anything else; special ones can be skipped in decode.
        self.added = dict(added_tokens) if added_tokens else {token: True for token in special_tokens}
        for token in self.added:
            if token not in self.vocab:
                raise ValueError(f"added token {token!r} is not in the vocabulary")
        # (left id, right id) -> (rank, merged id); a later duplicate of a pair overrides an earlier one.
        self.ranks = {}
        for rank, (a, b) in enumerate(self.merges):
            self.ranks[(self.vocab[a], self.vocab[b])] = (rank, self.vocab[a + b])
        longest_first = sorted(self.added, key=len, reverse=True)
        self.added_pattern = regex.compile("|".join(map(regex.escape, longest_first))) if self.added else None
        self.cache: dict[str, list[int]] = {}
        self.merge_counts: list[int] | None = None  # filled in by train()

    # ---- encoding ---------------------------------------------------------------------------------------

    def bpe(self, symbols: str) -> list[int]:
        """Apply merges to one piece: lowest rank first, leftmost first among equal ranks.

        The symbols form a linked list; a heap holds (rank, position) of mergeable neighbours. An
        entry is skipped if its left symbol was absorbed or its pair changed since it was pushed.
        """
        ids = [self.vocab[c] for c in symbols]
        n = len(ids)
        nxt = list(range(1, n)) + [-1]
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = []
        for i in range(n - 1):
            if (ids[i], ids[i + 1]) in self.ranks:
                rank, new_id = self.ranks[(ids[i], ids[i + 1])]
                heap.append((rank, i, new_id))
        heapq.heapify(heap)
        while heap:
            rank, pos, new_id = heapq.heappop(heap)
            right = nxt[pos]
            if not alive[pos] or right == -1:
                continue
            current = self.ranks.get((ids[pos], ids[right]))
            if current is None or current[1] != new_id:
                continue  # outdated entry
            ids[pos] = new_id
            alive[right] = False
            nxt[pos] = nxt[right]
            if nxt[pos] != -1:
                prv[nxt[pos]] = pos
            if prv[pos] != -1 and (ids[prv[pos]], ids[pos]) in self.ranks:
                r, m = self.ranks[(ids[prv[pos]], ids[pos])]
                heapq.heappush(heap, (r, prv[pos], m))
            if nxt[pos] != -1 and (ids[pos], ids[nxt[pos]]) in self.ranks:
                r, m = self.ranks[(ids[pos], ids[nxt[pos]])]
                heapq.heappush(heap, (r, pos, m))
        return [ids[i] for i in range(n) if alive[i]]

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text that contains no added tokens."""
        if self.nfc:
            text = unicodedata.normalize("NFC", text)
        out = []
        for piece in pre_split(text, self.pattern):
            if piece not in self.cache:
                self.cache[piece] = self.bpe(to_symbols(piece))
            out.extend(self.cache[piece])
        return out

    def encode(self, text: str) -> list[int]:
        """Split out added tokens (leftmost, then longest), encode the rest."""
        if self.added_pattern is None:
            return self.encode_ordinary(text)
        out, position = [], 0
        for match in self.added_pattern.finditer(text):
            out += self.encode_ordinary(text[position:match.start()])
            out.append(self.vocab[match.group()])
            position = match.end()
        return out + self.encode_ordinary(text[position:])

    def tokens(self, text: str) -> list[str]:
        return [self.id_to_token[i] for i in self.encode(text)]

    # ---- decoding ---------------------------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """ids -> tokens -> bytes -> text. Bytes that are not valid UTF-8 become U+FFFD.

        A token made only of byte characters is turned back into its bytes; any other token (an added
        token such as '<|im_end|>' that contains other characters) is taken as its own UTF-8 text.
        """
        data = bytearray()
        for i in ids:
            token = self.id_to_token[int(i)]
            if skip_special_tokens and self.added.get(token):
                continue
            if all(c in CHAR_TO_BYTE for c in token):
                data.extend(CHAR_TO_BYTE[c] for c in token)
            else:
                data.extend(token.encode("utf-8"))
        return data.decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return len(self.vocab)

    # ---- files ------------------------------------------------------------------------------------------

    def to_tokenizer_json(self) -> dict:
        """A tokenizer.json that `tokenizers.Tokenizer.from_file` (and transformers) can load."""
        normalizer = {"type": "NFC"} if self.nfc else None
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": self.vocab[t], "content": t, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": special}
                             for t, special in sorted(self.added.items(), key=lambda item: self.vocab[item[0]])],
            "normalizer": normalizer,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.pattern}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": self.vocab, "merges": [list(pair) for pair in self.merges]},
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_tokenizer_json(), ensure_ascii=False, indent=1))

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> "ByteLevelBPE":
        """Load a byte-level BPE tokenizer.json (GPT-2 style or Qwen style)."""
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        model = spec["model"]
        if model.get("type") != "BPE" or model.get("byte_fallback") or model.get("continuing_subword_prefix"):
            raise ValueError("only byte-level BPE without byte fallback or subword prefixes is supported")
        if model.get("ignore_merges"):
            raise ValueError("ignore_merges=true is not supported")
        normalizer = spec.get("normalizer")
        if normalizer not in (None, {"type": "NFC"}):
            raise ValueError(f"unsupported normalizer {normalizer}")
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        pre = spec.get("pre_tokenizer") or {}
        steps = pre.get("pretokenizers", [pre])
        pattern = None
        for step in steps:
            if step.get("type") == "Split" and step.get("behavior") == "Isolated" and not step.get("invert"):
                pattern = step["pattern"].get("Regex") or regex.escape(step["pattern"]["String"])
            elif step.get("type") == "ByteLevel" and step.get("use_regex", True):
                if step.get("add_prefix_space"):
                    raise ValueError("add_prefix_space=true is not supported")
                pattern = GPT2_PATTERN
        if pattern is None:
            raise ValueError(f"unsupported pre_tokenizer {pre}")
        vocab = dict(model["vocab"])
        added = {}
        for token in spec.get("added_tokens", []):
            vocab.setdefault(token["content"], token["id"])
            added[token["content"]] = bool(token.get("special"))
        return cls(vocab, merges, pattern=pattern, nfc=normalizer is not None, added_tokens=added)
