"""companion.tokenizer against transformers, on the real Qwen3-0.6B and Qwen2.5 tokenizer files
(found through REASONING_DATA_DIR, see conftest.py)."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import jinja2
import pytest
import tokenizers
import torch
import transformers
from conftest import data_dir

from companion.tokenizer import (
    QWEN3_CHAT_TEMPLATE,
    QWEN3_NON_SPECIAL_TOKENS,
    QWEN3_SPECIAL_TOKENS,
    Tokenizer,
    load_tokenizer,
    render_jinja_chat,
    render_qwen3_chat,
)

QWEN3 = data_dir() / "qwen3-0.6b"
QWEN25 = data_dir() / "qwen2.5-0.5b"


@pytest.fixture(scope="module")
def ours():
    return load_tokenizer(QWEN3)


@pytest.fixture(scope="module")
def reference():
    return transformers.AutoTokenizer.from_pretrained(str(QWEN3))


def link_or_copy(source: Path, target: Path) -> None:
    try:
        target.symlink_to(source)
    except OSError:
        shutil.copy(source, target)


@pytest.fixture(scope="module")
def qwen25_folder(tmp_path_factory):
    """Qwen2.5's tokenizer_config.json (its own template) with the Qwen3 tokenizer.json, whose
    vocabulary and merges are the same; the extra Qwen3 tokens come after Qwen2.5's."""
    folder = tmp_path_factory.mktemp("qwen25")
    link_or_copy(QWEN3 / "tokenizer.json", folder / "tokenizer.json")
    link_or_copy(QWEN25 / "tokenizer_config.json", folder / "tokenizer_config.json")
    link_or_copy(QWEN25 / "config.json", folder / "config.json")
    return folder


# ----- conversations ---------------------------------------------------------------------------

def system(text):
    return {"role": "system", "content": text}


def user(text):
    return {"role": "user", "content": text}


def assistant(text, **fields):
    return {"role": "assistant", "content": text, **fields}


SYSTEM = system("You are a careful math tutor.")
Q1 = user("What is 12 * 7?")
Q2 = user("And 12 * 8?")
A_PLAIN = assistant("84")
A_THINK = assistant("<think>\n12 * 7 = 84\n</think>\n\nThe answer is \\boxed{84}.")
A_THINK_TIGHT = assistant("<think>12*8=96</think>96")
A_REASONING = assistant("The answer is 96.", reasoning_content="\n12 * 8 = 96\n")

CONVERSATIONS = {
    "user only": [Q1],
    "system and user": [SYSTEM, Q1],
    "system only": [SYSTEM],
    "assistant answered": [Q1, A_PLAIN],
    "assistant with think, last": [SYSTEM, Q1, A_THINK],
    "assistant without think, last": [Q1, assistant("Plain answer.")],
    "think before last query is stripped": [Q1, A_THINK, Q2],
    "think before and after last query": [SYSTEM, Q1, A_THINK, Q2, A_THINK_TIGHT],
    "reasoning_content after last query": [Q1, A_PLAIN, Q2, A_REASONING],
    "reasoning_content before last query": [Q1, A_REASONING, Q2],
    "empty reasoning_content": [Q1, assistant("84", reasoning_content="")],
    "reasoning_content None": [Q1, assistant("84", reasoning_content=None)],
    "thinking alias": [Q1, assistant("84", thinking="7 * 12")],
    "two assistant turns after last query": [Q1, A_THINK, assistant("Also: <think>more</think> 84")],
    "middle assistant without reasoning after last query": [Q1, A_PLAIN, A_THINK],
    "empty contents": [system(""), user(""), assistant("")],
    "empty think block": [Q1, assistant("<think>\n\n</think>\n\n84")],
    "unclosed think": [Q1, assistant("<think>still thinking")],
    "close without open": [Q1, assistant("some thoughts\n</think>\n\n84")],
    "two think blocks": [Q1, assistant("<think>a</think>b<think>c</think>\n\nd")],
    "unicode": [
        user("Résous: 2² + √9 = ? 漢字 🙂 Ελληνικά"),
        assistant("<think>二加三</think>\n= 7 ✓"),
    ],
    "multi-line": [user("Line 1\nLine 2\n\n\tindented\r\nwindows"), assistant("\n\nleading newlines\n\n")],
    "later system message": [SYSTEM, Q1, A_PLAIN, system("Be brief."), Q2],
    "no user message": [SYSTEM, A_THINK],
    "user text that looks like a tool result": [Q1, A_THINK, user("<tool_response>42</tool_response>"), A_THINK_TIGHT],
    "special tokens in content": [user("say <|im_end|> and <think>"), A_PLAIN],
    "jinja-looking content": [user("{{ 1 + 1 }} {% if x %}")],
}

RENDER_OPTIONS = [
    dict(add_generation_prompt=False),
    dict(add_generation_prompt=True),
    dict(add_generation_prompt=True, enable_thinking=False),
    dict(add_generation_prompt=False, enable_thinking=False),
]


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_qwen3_chat_is_byte_identical_to_transformers(ours, reference, name):
    messages = CONVERSATIONS[name]
    for options in RENDER_OPTIONS:
        expected = reference.apply_chat_template(messages, tokenize=False, **options)
        assert ours.apply_chat_template(messages, **options) == expected, options


def test_qwen3_python_renderer_matches_jinja_on_random_chats():
    """Random conversations built from the pieces the template treats specially."""
    rng = random.Random(0)
    pieces = ["", "x", "\n", "\n\n", "<think>", "</think>", "<tool_response>", "</tool_response>", "84", " ", "é"]
    for _ in range(300):
        messages = []
        for index in range(rng.randint(1, 6)):
            role = rng.choice(["system", "user", "assistant", "assistant"])
            message = {"role": role, "content": "".join(rng.choices(pieces, k=rng.randint(0, 6)))}
            if role == "assistant" and rng.random() < 0.2:
                message["reasoning_content"] = "".join(rng.choices(pieces, k=3))
            messages.append(message)
        options = dict(add_generation_prompt=rng.random() < 0.5, enable_thinking=rng.random() < 0.5)
        expected = render_jinja_chat(QWEN3_CHAT_TEMPLATE, messages, **options)
        assert render_qwen3_chat(messages, **options) == expected, messages


def test_tool_conversations_render_through_the_template(ours, reference):
    add = {"name": "add", "description": "Add é", "parameters": {"type": "object"}}
    tools = [{"type": "function", "function": add}]
    messages = [
        SYSTEM,
        Q1,
        assistant("<think>use the tool</think>", tool_calls=[{"function": {"name": "add", "arguments": {"a": 12}}}]),
        {"role": "tool", "content": "84"},
        {"role": "tool", "content": "ok"},
    ]
    for options in RENDER_OPTIONS:
        expected = reference.apply_chat_template(messages, tools=tools, tokenize=False, **options)
        assert ours.apply_chat_template(messages, tools=tools, **options) == expected


def test_tokenize_gives_the_ids_of_transformers(ours, reference):
    messages = CONVERSATIONS["think before and after last query"]
    expected = reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ours.apply_chat_template(messages, add_generation_prompt=True, tokenize=True) == list(expected)


def test_thinking_off_appends_an_empty_think_block(ours):
    text = ours.apply_chat_template([Q1], add_generation_prompt=True, enable_thinking=False)
    assert text == "<|im_start|>user\nWhat is 12 * 7?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


# ----- Qwen2.5 through the Jinja fallback ------------------------------------------------------


def test_qwen25_template_matches_transformers(qwen25_folder):
    ours = load_tokenizer(qwen25_folder)
    reference = transformers.AutoTokenizer.from_pretrained(str(qwen25_folder))
    assert ours.chat_template != QWEN3_CHAT_TEMPLATE
    assert ours.eos_token == "<|endoftext|>" and ours.eos_token_ids == [151643]
    names = ["user only", "system and user", "think before and after last query", "unicode", "multi-line"]
    for name in names:
        for options in RENDER_OPTIONS[:2]:
            expected = reference.apply_chat_template(CONVERSATIONS[name], tokenize=False, **options)
            assert ours.apply_chat_template(CONVERSATIONS[name], **options) == expected, (name, options)


def test_jinja_fallback_provides_transformers_globals():
    template = (
        "{{ strftime_now('%Y') | length }} {{ {'k': 'é'} | tojson }}"
        "{% if messages | length > 1 %}{{ raise_exception('too long') }}{% endif %}"
    )
    assert render_jinja_chat(template, [Q1]) == '4 {"k": "é"}'
    with pytest.raises(jinja2.TemplateError, match="too long"):
        render_jinja_chat(template, [Q1, Q2])
    generation = "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    assert render_jinja_chat(generation, [Q1]) == Q1["content"]


def test_jinja_fallback_is_sandboxed():
    with pytest.raises(jinja2.exceptions.SecurityError):
        render_jinja_chat("{{ messages.__class__.__mro__ }}", [Q1])
    with pytest.raises(jinja2.exceptions.SecurityError):
        render_jinja_chat("{% set ns = namespace(_x=1) %}", [Q1])


# ----- encode / decode ---------------------------------------------------------------------------

TEXTS = [
    "Hello, world!",
    "12345 + 678.9 = 1,234,567",
    "  leading spaces and trailing  ",
    "Café naïve résumé — “quotes” ½ ² √",
    "漢字とかなカナ 한국어 Ελληνικά עברית 🙂👍🏽",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "not <|special tokens|> but <think> and </think> are",
    "x\n\n\ny\r\n\tz",
    "e\u0301 (decomposed) becomes é under NFC",
    "",
]


def test_encode_and_decode_match_transformers(ours, reference):
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == reference.encode(text, add_special_tokens=False), text
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip), text
    assert ours.batch_encode(TEXTS) == [ours.encode(text) for text in TEXTS]
    assert ours.batch_decode(ours.batch_encode(TEXTS[:3])) == TEXTS[:3]


def test_digits_are_split_one_by_one(ours):
    assert ours.convert_ids_to_tokens(ours.encode("2025")) == ["2", "0", "2", "5"]


def test_decode_accepts_a_tensor(ours):
    ids = ours.encode("12 * 7 = 84")
    assert ours.decode(torch.tensor(ids)) == "12 * 7 = 84"


def test_vocabulary_and_special_ids(ours, reference):
    assert len(ours) == len(reference) == 151669
    assert ours.vocab_size == reference.vocab_size == 151643
    assert (ours.eos_token, ours.eos_token_id) == ("<|im_end|>", 151645)
    assert ours.pad_token_id == reference.pad_token_id == 151643
    assert ours.eos_token_ids == [151645, 151643]
    assert ours.convert_tokens_to_ids(["<think>", "</think>"]) == [151667, 151668]
    assert ours.convert_tokens_to_ids("<|im_start|>") == 151644
    assert ours.convert_ids_to_tokens(151667) == "<think>"
    assert ours.special_tokens == [token for token in QWEN3_SPECIAL_TOKENS if token not in QWEN3_NON_SPECIAL_TOKENS]
    assert "<think>" not in ours.special_tokens
    with pytest.raises(KeyError, match="not-a-token"):
        ours.convert_tokens_to_ids("not-a-token")
    with pytest.raises(KeyError, match="outside the vocabulary"):
        ours.convert_ids_to_tokens(10**7)


def test_generation_config_adds_stop_ids(tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        link_or_copy(QWEN3 / name, tmp_path / name)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151644]}))
    assert load_tokenizer(tmp_path).eos_token_ids == [151645, 151644, 151643]


# ----- the Qwen3 constants -------------------------------------------------------------------------


def test_qwen3_constants_match_the_real_files():
    config = json.loads((QWEN3 / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert QWEN3_CHAT_TEMPLATE == config["chat_template"]
    declared = config["added_tokens_decoder"]
    assert list(QWEN3_SPECIAL_TOKENS) == [declared[key]["content"] for key in sorted(declared, key=int)]
    assert QWEN3_NON_SPECIAL_TOKENS == {entry["content"] for entry in declared.values() if not entry["special"]}
    assert min(map(int, declared)) == 151643


# ----- save -----------------------------------------------------------------------------------------


def test_save_round_trips_through_auto_tokenizer(ours, reference, tmp_path):
    ours.save(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    loaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    again = load_tokenizer(tmp_path)
    assert loaded.chat_template == again.chat_template == QWEN3_CHAT_TEMPLATE
    assert (loaded.eos_token, loaded.pad_token, len(loaded)) == ("<|im_end|>", "<|endoftext|>", len(ours))
    assert again.special_tokens == ours.special_tokens
    for text in TEXTS:
        assert loaded.encode(text, add_special_tokens=False) == again.encode(text) == ours.encode(text)
    messages = CONVERSATIONS["think before and after last query"]
    expected = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected


def test_save_keeps_a_stale_chat_template_file_in_step(ours, tmp_path):
    (tmp_path / "chat_template.jinja").write_text("{{ 'old' }}")
    ours.save(tmp_path)
    assert load_tokenizer(tmp_path).chat_template == QWEN3_CHAT_TEMPLATE


def tiny_backend() -> tokenizers.Tokenizer:
    """A word-level tokenizer with four words, to build folders cheaply."""
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "b": 1, "c": 2, "[UNK]": 3}, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return backend


def test_in_memory_tokenizer_with_the_qwen3_template_saves_and_loads(tmp_path):
    config = {
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "chat_template": QWEN3_CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(4 + i): {"content": token, "special": token not in QWEN3_NON_SPECIAL_TOKENS}
            for i, token in enumerate(QWEN3_SPECIAL_TOKENS)
        },
    }
    tok = Tokenizer(tiny_backend(), config)
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "</think>"]) == [4, 29]
    assert tok.eos_token_ids == [6, 4]
    assert tok.encode("a <think> b<|im_end|>") == [0, 28, 1, 6]
    assert tok.decode([0, 28, 1, 6], skip_special_tokens=True) == "a <think> b"
    tok.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    expected = tok.apply_chat_template([Q1], add_generation_prompt=True)
    assert loaded.apply_chat_template([Q1], add_generation_prompt=True) == expected
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert reference.encode("a <think> b<|im_end|>", add_special_tokens=False) == [0, 28, 1, 6]


# ----- errors ---------------------------------------------------------------------------------------


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    link_or_copy(QWEN3 / "tokenizer.json", tmp_path / "tokenizer.json")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*tokenizer_config.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        load_tokenizer(tmp_path / "no-such-folder")


def test_bad_files_are_named(tmp_path):
    tiny_backend().save(str(tmp_path / "tokenizer.json"))
    config_file = tmp_path / "tokenizer_config.json"
    config_file.write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_config.json: not valid JSON"):
        load_tokenizer(tmp_path)
    config_file.write_text(json.dumps({"eos_token": "<|im_end|>"}))
    with pytest.raises(ValueError, match="tokenizer_config.json: eos_token '<|im_end|>' is not a token"):
        load_tokenizer(tmp_path)
    config_file.write_text(json.dumps({}))
    with pytest.raises(ValueError, match="no 'eos_token'"):
        load_tokenizer(tmp_path)
    config_file.write_text(json.dumps({"eos_token": "c", "added_tokens_decoder": {"9": {"content": "<x>"}}}))
    with pytest.raises(ValueError, match="gives '<x>' id 9, but tokenizer.json gives it id 4"):
        load_tokenizer(tmp_path)
    config_file.write_text(json.dumps({"eos_token": "c"}))
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": "two"}))
    with pytest.raises(ValueError, match="config.json: 'eos_token_id'"):
        load_tokenizer(tmp_path)
    (tmp_path / "config.json").unlink()
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="tokenizer.json: not a valid tokenizer.json"):
        load_tokenizer(tmp_path)


def test_bad_messages_are_explained(ours, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        ours.apply_chat_template([])
    with pytest.raises(TypeError, match="list of dicts"):
        ours.apply_chat_template("hello")
    with pytest.raises(ValueError, match="message 1 has no 'role'"):
        ours.apply_chat_template([Q1, {"content": "x"}])
    with pytest.raises(ValueError, match="role 'developer'"):
        ours.apply_chat_template([{"role": "developer", "content": "x"}])
    with pytest.raises(TypeError, match="message 0 \\(user\\): 'content' must be a string"):
        ours.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    tiny_backend().save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "c"}))
    with pytest.raises(ValueError, match="has no chat_template"):
        load_tokenizer(tmp_path).apply_chat_template([Q1])


def test_split_reasoning_separates_the_think_block_from_the_answer():
    from companion.tokenizer import split_reasoning

    assert split_reasoning("<think>\n1 + 2 = 3.\n</think>\n\nThe answer is \\boxed{3}.") == \
        ("1 + 2 = 3.", "The answer is \\boxed{3}.")
    assert split_reasoning("<think>\n\n</think>\n\n\\boxed{3}") == ("", "\\boxed{3}")
    assert split_reasoning("<think>\nstill thinking") == ("", "<think>\nstill thinking")  # never closed
    assert split_reasoning("\\boxed{3}") == ("", "\\boxed{3}")
