"""Problem loaders: real files from REASONING_DATA_DIR, small temporary files, and the download
path with a fake fetch (no network)."""
from __future__ import annotations

import hashlib
import json
import os
import urllib.error
from pathlib import Path

import pytest

from companion import data
from companion.data import ChecksumError, DataError, Problem, RemoteFile, load_problems

SHARED = Path(os.environ["REASONING_DATA_DIR"]) if os.environ.get("REASONING_DATA_DIR") else None


def _shared(relative: str) -> Path:
    if SHARED is None or not (SHARED / relative).exists():
        pytest.skip(f"set REASONING_DATA_DIR to the folder holding {relative}")
    return SHARED


def _write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty download cache, no REASONING_DATA_DIR, and a fetch that fails like no network."""
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(data.DATA_ENV, raising=False)

    def no_network(url: str, destination: Path) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(data, "_fetch", no_network)
    return tmp_path / "cache"


# --------------------------------------------------------------------------- the real files
def test_gsm8k_test_and_train_from_the_shared_folder():
    folder = _shared("gsm8k/test.jsonl")
    test = load_problems("gsm8k", data_dir=folder)
    assert len(test) == 1319 and len({p.id for p in test}) == 1319
    assert test[0] == Problem(id="gsm8k-test-00000", question=test[0].question, answer="18",
                              solution=test[0].solution, source="gsm8k")
    assert all(p.answer.lstrip("-").isdigit() for p in test)
    assert any("," in p.solution.split("####")[-1] for p in test)  # separators existed and were removed
    assert len(load_problems("gsm8k", "train", data_dir=folder)) == 7473


def test_math500_from_the_environment_variable(monkeypatch):
    folder = _shared("math500/test.jsonl")
    monkeypatch.setenv(data.DATA_ENV, str(folder))
    problems = load_problems("math500")
    assert len(problems) == 500
    assert problems[0].id == "test/precalculus/807.json" and problems[0].level == 2
    assert problems[0].subject == "Precalculus" and problems[0].answer.startswith("\\left( 3")
    assert {p.level for p in problems} == {1, 2, 3, 4, 5}
    assert sum(p.subject == "Algebra" for p in problems) == 124
    assert load_problems("math500", limit=7) == problems[:7]


def test_the_repository_arith_set_when_generated():
    if not (data.REPO_DATA / "arith" / "test.jsonl").exists():
        pytest.skip("data/arith has not been generated")
    problems = load_problems("arith")
    assert problems and all(p.source == "arith" and p.steps and p.answer for p in problems)
    assert all(p.solution.rstrip().endswith("#### " + p.answer) for p in problems)


# --------------------------------------------------------------------------- temporary files
def test_arith_loader_reads_the_generator_format(tmp_path):
    records = [{"id": f"arith-test-{i:05d}", "question": f"Tom has {i} apples and buys 2 more. How many?",
                "solution": f"{i} + 2 = {i + 2}\n#### {i + 2}", "answer": str(i + 2), "steps": 1 + i % 3}
               for i in range(1, 6)]
    _write_jsonl(tmp_path / "arith" / "test.jsonl", records)
    _write_jsonl(tmp_path / "arith" / "validation.jsonl", records[:2])
    problems = load_problems("arith", data_dir=tmp_path)
    assert [p.id for p in problems] == [r["id"] for r in records]
    assert problems[0] == Problem(id="arith-test-00001", question=records[0]["question"], answer="3",
                                  solution=records[0]["solution"], source="arith", steps=2)
    assert len(load_problems("arith", "validation", data_dir=tmp_path)) == 2
    assert len(load_problems("arith", data_dir=tmp_path, limit=3)) == 3


def test_missing_arith_split_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "REPO_DATA", tmp_path / "repo-data")
    with pytest.raises(DataError, match="arith train not found"):
        load_problems("arith", "train", data_dir=tmp_path)


@pytest.mark.parametrize("line, message", [
    ('{"question": "q", "answer": "#### 5"', "not valid JSON"),
    ('["a", "list"]', "expected a JSON object"),
    ('{"answer": "#### 5"}', "missing field 'question'"),
    ('{"question": "q", "answer": "no final line"}', "no '#### <answer>' line"),
    ('{"question": 7, "answer": "#### 5"}', "field 'question' should be str"),
])
def test_malformed_gsm8k_lines_name_file_and_line(tmp_path, line, message):
    good = json.dumps({"question": "q", "answer": "#### 5"})
    path = _write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [good, "", good, line])
    with pytest.raises(DataError, match=message) as error:
        load_problems("gsm8k", data_dir=tmp_path)
    assert f"{path}:4" in str(error.value)


def test_malformed_arith_steps(tmp_path):
    record = {"id": "a", "question": "q", "solution": "#### 1", "answer": "1", "steps": "three"}
    path = _write_jsonl(tmp_path / "arith" / "test.jsonl", [record])
    with pytest.raises(DataError, match=f"{path}:1: field 'steps' should be int"):
        load_problems("arith", data_dir=tmp_path)


def test_unknown_names_and_splits():
    with pytest.raises(ValueError, match="unknown problem set 'aime'"):
        load_problems("aime")
    with pytest.raises(ValueError, match="math500 has no split 'train'"):
        load_problems("math500", "train")
    with pytest.raises(ValueError, match="limit must be >= 0"):
        load_problems("gsm8k", limit=-1)


def test_explicit_data_dir_without_the_file(tmp_path):
    with pytest.raises(DataError, match="gsm8k/test.jsonl"):
        load_problems("gsm8k", data_dir=tmp_path)


def test_math_train_drops_math500_problems(tmp_path):
    held = {"problem": "What is 1+1?", "solution": "\\boxed{2}", "answer": "2", "subject": "Algebra",
            "level": 1, "unique_id": "test/algebra/1.json"}
    fresh = dict(held, problem="What is 2+2?", answer="4", unique_id="train/algebra/9.json", level="Level 3")
    _write_jsonl(tmp_path / "math500" / "test.jsonl", [held])
    _write_jsonl(tmp_path / "math" / "train.jsonl", [held, fresh, dict(held, unique_id="train/x/2.json")])
    problems = load_problems("math", data_dir=tmp_path)
    assert [(p.id, p.answer, p.level, p.source) for p in problems] == [("train/algebra/9.json", "4", 3, "math")]


# --------------------------------------------------------------------------- downloads
def _serve(monkeypatch, files: dict[str, bytes], calls: list[str]) -> None:
    def fake_fetch(url: str, destination: Path) -> None:
        calls.append(url)
        if url not in files:
            raise urllib.error.URLError("unreachable")
        destination.write_bytes(files[url])

    monkeypatch.setattr(data, "_fetch", fake_fetch)


def _pin(monkeypatch, key, content: bytes, urls: tuple[str, ...]) -> None:
    remote = RemoteFile(data.REMOTE_FILES[key].relative, urls, hashlib.sha256(content).hexdigest())
    monkeypatch.setitem(data.REMOTE_FILES, key, remote)


def test_download_verifies_caches_and_reuses(offline_cache, monkeypatch):
    content = (json.dumps({"question": "Two plus 1,000?", "answer": "2 + 1000 = 1002\n#### 1,002"}) + "\n").encode()
    _pin(monkeypatch, ("gsm8k", "test"), content, ("https://example.org/test.jsonl",))
    calls: list[str] = []
    _serve(monkeypatch, {"https://example.org/test.jsonl": content}, calls)
    problems = load_problems("gsm8k")
    assert [p.answer for p in problems] == ["1002"]
    assert (offline_cache / "gsm8k" / "test.jsonl").read_bytes() == content
    assert load_problems("gsm8k") == problems
    assert calls == ["https://example.org/test.jsonl"]  # the second load used the cache
    assert not list(offline_cache.rglob("*.tmp"))


def test_download_tries_the_next_url(offline_cache, monkeypatch):
    record = {"problem": "p", "solution": "s", "answer": "1", "subject": "Algebra", "level": 1, "unique_id": "u"}
    content = (json.dumps(record) + "\n").encode()
    _pin(monkeypatch, ("math500", "test"), content, ("https://down.example/a", "https://up.example/b"))
    calls: list[str] = []
    _serve(monkeypatch, {"https://up.example/b": content}, calls)
    assert [p.id for p in load_problems("math500")] == ["u"]
    assert calls == ["https://down.example/a", "https://up.example/b"]


def test_checksum_mismatch_is_an_error_and_leaves_nothing(offline_cache, monkeypatch):
    _pin(monkeypatch, ("gsm8k", "test"), b"the expected bytes\n", ("https://example.org/test.jsonl",))
    _serve(monkeypatch, {"https://example.org/test.jsonl": b"tampered bytes\n"}, [])
    with pytest.raises(ChecksumError, match="does not match the pinned"):
        load_problems("gsm8k")
    assert not (offline_cache / "gsm8k" / "test.jsonl").exists()
    assert not list(offline_cache.rglob("*.tmp"))


def test_a_corrupted_cache_is_downloaded_again(offline_cache, monkeypatch):
    content = (json.dumps({"question": "q", "answer": "#### 3"}) + "\n").encode()
    _pin(monkeypatch, ("gsm8k", "train"), content, ("https://example.org/train.jsonl",))
    _write_jsonl(offline_cache / "gsm8k" / "train.jsonl", ['{"question": "q", "answer": "#### 4"}'])
    calls: list[str] = []
    _serve(monkeypatch, {"https://example.org/train.jsonl": content}, calls)
    assert [p.answer for p in load_problems("gsm8k", "train")] == ["3"]
    assert len(calls) == 1


def test_offline_without_files_says_where_to_put_them(offline_cache):
    with pytest.raises(DataError) as error:
        load_problems("gsm8k", "test")
    message = str(error.value)
    assert "gsm8k/test.jsonl" in message and data.DATA_ENV in message and "data_dir" in message


def test_math_train_offline_error(offline_cache, tmp_path, monkeypatch):
    _write_jsonl(tmp_path / "shared" / "math500" / "test.jsonl",
                 [{"problem": "p", "solution": "s", "answer": "1", "subject": "A", "level": 1, "unique_id": "u"}])
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "shared"))
    with pytest.raises(DataError, match="MATH train is not available.*math/train.jsonl"):
        load_problems("math")
