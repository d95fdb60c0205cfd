"""Problem sets behind one ``Problem`` shape: GSM8K, MATH-500, MATH train, and the synthetic ``arith``.

Where the files come from, in order:

1. ``data_dir`` (an argument), laid out like ``gsm8k/{train,test}.jsonl``, ``math500/test.jsonl``,
   ``math/train.jsonl``, ``arith/{split}.jsonl``;
2. the folder named by the environment variable ``REASONING_DATA_DIR`` (same layout);
3. the download cache ``~/.cache/companion`` (or ``$COMPANION_CACHE_DIR``), filled on first use
   from the canonical public URLs and checked against pinned sha256 digests.

``arith`` is the project's own synthetic set: ``<repo>/data/arith/{train,validation,test}.jsonl``.

    >>> problems = load_problems("gsm8k", "test", limit=3)
    >>> problems[0].answer
    '18'
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DATA_ENV = "REASONING_DATA_DIR"
CACHE_ENV = "COMPANION_CACHE_DIR"
REPO_DATA = Path(__file__).resolve().parent.parent / "data"
DOWNLOAD_TIMEOUT = 60


@dataclass
class Problem:
    """One problem with its gold final answer. ``steps`` is set for synthetic problems."""

    id: str
    question: str
    answer: str
    solution: str = ""
    subject: str | None = None
    level: int | None = None
    source: str = ""
    steps: int | None = None


@dataclass(frozen=True)
class RemoteFile:
    """A public file: where it lives in a data folder, where to download it, and its sha256."""

    relative: str
    urls: tuple[str, ...]
    sha256: str


_GSM8K = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/{}.jsonl"
_PRM800K_LFS = "https://media.githubusercontent.com/media/openai/prm800k/main/prm800k/math_splits/{}.jsonl"
REMOTE_FILES = {
    ("gsm8k", "train"): RemoteFile("gsm8k/train.jsonl", (_GSM8K.format("train"),),
                                   "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
    ("gsm8k", "test"): RemoteFile("gsm8k/test.jsonl", (_GSM8K.format("test"),),
                                  "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
    ("math500", "test"): RemoteFile(
        "math500/test.jsonl",
        ("https://huggingface.co/datasets/HuggingFaceH4/MATH-500/resolve/main/test.jsonl",
         _PRM800K_LFS.format("test")),
        "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132"),
    # PRM800K's train split: all 12,000 MATH problems (train and test) that are not in MATH-500.
    ("math", "train"): RemoteFile("math/train.jsonl", (_PRM800K_LFS.format("train"),),
                                  "90d96daeac3fe343ebb1e22ce93dd99690f75983e957f88de42f87cffe1e8076"),
}
SPLITS = {"gsm8k": ("train", "test"), "math500": ("test",), "math": ("train",),
          "arith": ("train", "validation", "test")}
DEFAULT_SPLIT = {"gsm8k": "test", "math500": "test", "math": "train", "arith": "test"}


class DataError(ValueError):
    """A data file is missing, malformed, or failed its checksum."""


class ChecksumError(DataError):
    """A downloaded file does not have the pinned sha256."""


# --------------------------------------------------------------------------- finding files
def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "companion")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` (tests replace this function)."""
    request = urllib.request.Request(url, headers={"User-Agent": "companion-data/0.1"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out)


def download(remote: RemoteFile, destination: Path) -> Path:
    """Fetch ``remote`` into ``destination`` (atomically), trying each URL; verify its sha256.

    Raises ``ChecksumError`` when a download arrived but had the wrong digest (and no other URL
    gave the right one), ``DataError`` when nothing could be downloaded."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    mismatches: list[str] = []
    for url in remote.urls:
        handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=destination.name, suffix=".tmp")
        os.close(handle)
        temporary_path = Path(temporary)
        try:
            _fetch(url, temporary_path)
            digest = sha256_of(temporary_path)
            if digest == remote.sha256:
                os.replace(temporary_path, destination)
                return destination
            mismatches.append(f"{url}: sha256 {digest} does not match the pinned {remote.sha256}")
        except OSError as error:
            failures.append(f"{url}: {type(error).__name__}: {error}")
        finally:
            temporary_path.unlink(missing_ok=True)
    if mismatches:
        raise ChecksumError("; ".join(mismatches) + " (the file changed upstream or the download is corrupt)")
    raise DataError("could not download " + remote.relative + " (" + "; ".join(failures) + ")")


def locate(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The local path of a public data file, downloading it into the cache if needed."""
    remote = REMOTE_FILES[(name, split)]
    if data_dir is not None:
        path = Path(data_dir) / remote.relative
        if not path.exists():
            raise DataError(f"{path} does not exist (data_dir={data_dir!s} should hold {remote.relative})")
        return path
    if os.environ.get(DATA_ENV):
        path = Path(os.environ[DATA_ENV]) / remote.relative
        if path.exists():
            return path
    cached = cache_dir() / remote.relative
    if cached.exists() and sha256_of(cached) == remote.sha256:
        return cached
    try:
        return download(remote, cached)
    except ChecksumError:
        raise
    except DataError as error:
        raise DataError(
            f"{name} {split} is not available locally and the download failed: {error}. "
            f"Offline, put the file at <folder>/{remote.relative} (from {remote.urls[0]}) and set "
            f"{DATA_ENV}=<folder>, or pass data_dir=<folder>.") from error


# --------------------------------------------------------------------------- reading
def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) for each non-empty line; bad JSON raises ``DataError`` naming file:line."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append((number, record))
    return records


def _field(record: dict, key: str, path: Path, number: int, kind: type = str):
    if key not in record:
        raise DataError(f"{path}:{number}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(f"{path}:{number}: field {key!r} should be {expected}, got {type(value).__name__}")
    return value


def gsm8k_gold(solution: str, where: str = "") -> str:
    """The number after ``####`` with thousands separators removed."""
    if "####" not in solution:
        raise DataError(f"{where}: solution has no '#### <answer>' line")
    return solution.split("####")[-1].strip().replace(",", "")


def _gsm8k(path: Path, split: str) -> list[Problem]:
    problems = []
    for index, (number, record) in enumerate(read_jsonl(path)):
        solution = _field(record, "answer", path, number)
        problems.append(Problem(
            id=f"gsm8k-{split}-{index:05d}", question=_field(record, "question", path, number),
            answer=gsm8k_gold(solution, f"{path}:{number}"), solution=solution, source="gsm8k"))
    return problems


def _math(path: Path, source: str) -> list[Problem]:
    problems = []
    for number, record in read_jsonl(path):
        level = record.get("level")
        if isinstance(level, str) and level.startswith("Level "):
            level = level.split()[-1]
        problems.append(Problem(
            id=_field(record, "unique_id", path, number), question=_field(record, "problem", path, number),
            answer=_field(record, "answer", path, number), solution=record.get("solution", ""),
            subject=record.get("subject"), level=int(level) if level not in (None, "", "?") else None,
            source=source))
    return problems


def arith_path(split: str, data_dir: str | os.PathLike | None = None) -> Path:
    candidates = ([Path(data_dir) / "arith" / f"{split}.jsonl"] if data_dir is not None else [])
    candidates.append(REPO_DATA / "arith" / f"{split}.jsonl")
    for path in candidates:
        if path.exists():
            return path
    raise DataError(f"arith {split} not found (looked in {', '.join(str(p) for p in candidates)}); "
                    "generate it with the project's synthetic-data script")


def _arith(path: Path) -> list[Problem]:
    problems = []
    for number, record in read_jsonl(path):
        steps = record.get("steps")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)):
            raise DataError(f"{path}:{number}: field 'steps' should be int, got {type(steps).__name__}")
        problems.append(Problem(
            id=_field(record, "id", path, number), question=_field(record, "question", path, number),
            answer=str(_field(record, "answer", path, number, (str, int))), solution=record.get("solution", ""),
            source="arith", steps=steps))
    return problems


def _math_train(data_dir: str | os.PathLike | None) -> list[Problem]:
    """MATH problems for training: PRM800K's train split, minus anything in MATH-500."""
    held_out = _math(locate("math500", "test", data_dir), "math500")
    held_ids = {p.id for p in held_out}
    held_questions = {p.question.strip() for p in held_out}
    problems = _math(_math_train_file(data_dir), "math")
    return [p for p in problems if p.id not in held_ids and p.question.strip() not in held_questions]


def _math_train_file(data_dir: str | os.PathLike | None) -> Path:
    try:
        return locate("math", "train", data_dir)
    except DataError as error:
        raise DataError(f"MATH train is not available: {error}") from error


# --------------------------------------------------------------------------- the entry point
def load_problems(name: str, split: str | None = None, data_dir: str | os.PathLike | None = None,
                  limit: int | None = None) -> list[Problem]:
    """Load a problem set: ``gsm8k`` (train/test), ``math500`` (test), ``math`` (train) or
    ``arith`` (train/validation/test). ``limit`` keeps the first N problems."""
    if name not in SPLITS:
        raise ValueError(f"unknown problem set {name!r}; choose one of {', '.join(SPLITS)}")
    split = split or DEFAULT_SPLIT[name]
    if split not in SPLITS[name]:
        raise ValueError(f"{name} has no split {split!r}; choose one of {', '.join(SPLITS[name])}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if name == "gsm8k":
        problems = _gsm8k(locate(name, split, data_dir), split)
    elif name == "math500":
        problems = _math(locate(name, split, data_dir), "math500")
    elif name == "math":
        problems = _math_train(data_dir)
    else:
        problems = _arith(arith_path(split, data_dir))
    return problems if limit is None else problems[:limit]
