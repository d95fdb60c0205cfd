"""Tokenizer and chat rendering for Qwen-family models, without `transformers`.

A Hugging Face model folder describes its tokenizer in two files: ``tokenizer.json`` (the byte-level
BPE pipeline, read by the fast ``tokenizers`` library) and ``tokenizer_config.json`` (which token ends
a reply, which one pads, and the chat template). :class:`Tokenizer` wraps the first and reads the
second, with the method names of ``transformers`` so that code written against either reads the same.

Chat rendering. A reasoning model is only as good as its prompt format: one missing newline after
``<think>`` and the model sees a prompt it was never trained on. The Qwen3 template is therefore
written out below as plain Python (:func:`render_qwen3_chat`), which a reader can step through, and
the tests check that it is byte-identical to what ``transformers`` renders from the Jinja template.
Any other template (Qwen2.5's, for instance) is rendered by :func:`render_jinja_chat` in a sandboxed
Jinja environment set up the way ``transformers`` sets up its own. Conversations that use tools
(a ``tools`` list, ``tool_calls`` on a message, or ``tool`` messages) also go through the Jinja
path, with the Qwen3 template itself: tool use is not part of the chapters, and the template is
the reference for it.
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import jinja2
import jinja2.ext
import jinja2.utils
import tokenizers
from jinja2.sandbox import ImmutableSandboxedEnvironment

from companion.hub import resolve_model_dir

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

#: The chat template of the Qwen3 chat models (Qwen3-0.6B ... Qwen3-32B), byte for byte as it
#: appears under "chat_template" in their tokenizer_config.json.
QWEN3_CHAT_TEMPLATE = (TEMPLATES_DIR / "qwen3_chat_template.jinja").read_text(encoding="utf-8")

#: Qwen3's added tokens in id order; the first one, <|endoftext|>, follows the 151,643 BPE tokens.
QWEN3_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
    "<tool_response>", "</tool_response>", "<think>", "</think>",
)

#: The added tokens that Qwen3 flags ``special: false``. They are still single tokens, but
#: ``decode(..., skip_special_tokens=True)`` keeps them, so a decoded reply still shows its <think> block.
QWEN3_NON_SPECIAL_TOKENS = frozenset(QWEN3_SPECIAL_TOKENS[QWEN3_SPECIAL_TOKENS.index("<tool_call>"):])

#: The token that ends a pretraining document. Qwen chat models list it next to <|im_end|> as a
#: stop token in their generation_config.json, because a reply can also end this way.
DOCUMENT_END_TOKEN = "<|endoftext|>"

# Named special tokens that transformers hands to every chat template as variables.
TEMPLATE_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# The names a message's reasoning may come under; transformers copies the first one present to
# "reasoning_content" (what templates read) and to "thinking" (what gpt-oss templates read).
REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")

QWEN3_ROLES = ("system", "user", "assistant")


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus what ``tokenizer_config.json`` says about it.

    ``config`` is the parsed tokenizer_config.json (chat_template, eos_token, pad_token,
    added_tokens_decoder, ...). ``model_eos_token_ids`` are the stop ids that the model's own
    config.json / generation_config.json list. ``source`` names where the config came from, so that
    errors point at the file to fix. Tokens that ``added_tokens_decoder`` declares but ``backend``
    lacks are added to ``backend``, as transformers does.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        config: Mapping[str, Any] | None = None,
        model_eos_token_ids: Iterable[int] = (),
        source: str = "tokenizer_config.json",
    ):
        self.backend = backend
        self.config = dict(config or {})
        self.source = source
        self._add_declared_tokens()
        self.chat_template = _default_template(self.config.get("chat_template"), source)
        model_eos_token_ids = list(model_eos_token_ids)
        self.eos_token = _token_text(self.config.get("eos_token"), "eos_token", source)
        if self.eos_token is None and model_eos_token_ids:
            self.eos_token = self.backend.id_to_token(model_eos_token_ids[0])
        if self.eos_token is None:
            raise ValueError(f"{source}: no 'eos_token', and config.json names no eos_token_id in the vocabulary")
        self.pad_token = _token_text(self.config.get("pad_token"), "pad_token", source)
        self.eos_token_id = self._config_token_id(self.eos_token, "eos_token")
        self.pad_token_id = None if self.pad_token is None else self._config_token_id(self.pad_token, "pad_token")
        self.eos_token_ids = self._reply_end_ids(model_eos_token_ids)

    def __repr__(self) -> str:
        return f"Tokenizer({self.source!r}, tokens={len(self)}, eos={self.eos_token!r})"

    # ----- vocabulary -------------------------------------------------------------------------

    def __len__(self) -> int:
        """All token ids, added tokens included (like ``len()`` of a transformers tokenizer).

        The model's embedding matrix may have more rows than this (Qwen3: 151,936 rows for
        151,669 tokens); the extra rows are padding that no text maps to.
        """
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        """The BPE vocabulary without the added tokens, as ``transformers`` counts it."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    @property
    def added_tokens(self) -> dict[str, int]:
        """Every added token (special or not) and its id, in id order."""
        decoder = self.backend.get_added_tokens_decoder()
        return {decoder[index].content: index for index in sorted(decoder)}

    @property
    def special_tokens(self) -> list[str]:
        """The added tokens flagged special: the ones ``decode(skip_special_tokens=True)`` drops."""
        decoder = self.backend.get_added_tokens_decoder()
        return [decoder[index].content for index in sorted(decoder) if decoder[index].special]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Ids of token strings; an unknown token is an error, not a silent ``None``."""
        if isinstance(tokens, str):
            return self._token_id(tokens)
        return [self._token_id(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        """Token strings (in byte-level form, e.g. 'Ġthe' for ' the') of ids."""
        if isinstance(ids, int):
            return self._token_text_of(ids)
        return [self._token_text_of(int(index)) for index in ids]

    # ----- text <-> ids -----------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``. Special tokens written in the text (e.g. '<|im_end|>') become their ids."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def batch_encode(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        """Token ids of many texts at once (the Rust side runs them in parallel)."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise TypeError("batch_encode expects a list of str")
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (a list, or a 1-D tensor). Bytes that do not form UTF-8 show as U+FFFD."""
        return self.backend.decode([int(index) for index in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Iterable[Iterable[int]], skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]

    # ----- chat ---------------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = False,
        enable_thinking: bool = True,
        tokenize: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str | list[int]:
        """Render a conversation as the model saw conversations in training.

        ``add_generation_prompt`` appends the header of the assistant's next turn, so that the model
        continues as the assistant. With Qwen3, ``enable_thinking=False`` also appends an empty
        ``<think>\\n\\n</think>\\n\\n`` block, which makes the model answer without reasoning first.
        Returns the text, or its token ids when ``tokenize`` is true.
        """
        if self.chat_template is None:
            raise ValueError(f"{self.source} has no chat_template, so this tokenizer cannot render a chat")
        messages = normalize_messages(messages)
        if self.chat_template == QWEN3_CHAT_TEMPLATE and not tools and not uses_tools(messages):
            text = render_qwen3_chat(messages, add_generation_prompt, enable_thinking)
        else:
            text = render_jinja_chat(
                self.chat_template,
                messages,
                add_generation_prompt=add_generation_prompt,
                tools=tools,
                enable_thinking=enable_thinking,
                **self._template_tokens(),
            )
        return self.encode(text) if tokenize else text

    # ----- saving -------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write tokenizer.json and tokenizer_config.json, in the form ``AutoTokenizer`` loads.

        The stop ids that came from the model's config files are not written here: they belong to
        config.json / generation_config.json, which the checkpoint code writes.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"), pretty=True)
        config = dict(self.config)
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        config.update(eos_token=self.eos_token, pad_token=self.pad_token)
        config["added_tokens_decoder"] = self._added_tokens_decoder()
        config.pop("chat_template", None)
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
            stale = folder / "chat_template.jinja"  # transformers prefers this file over the config key
            if stale.exists():
                stale.write_text(self.chat_template, encoding="utf-8", newline="")
        with open(folder / "tokenizer_config.json", "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        return folder

    # ----- helpers ------------------------------------------------------------------------------

    def _token_id(self, token: str) -> int:
        index = self.backend.token_to_id(token)
        if index is None:
            raise KeyError(f"token {token!r} is not in the vocabulary of {self.source}")
        return index

    def _token_text_of(self, index: int) -> str:
        token = self.backend.id_to_token(index)
        if token is None:
            raise KeyError(f"id {index} is outside the vocabulary of {self.source} ({len(self)} tokens)")
        return token

    def _config_token_id(self, token: str, key: str) -> int:
        index = self.backend.token_to_id(token)
        if index is None:
            raise ValueError(f"{self.source}: {key} {token!r} is not a token of tokenizer.json")
        return index

    def _reply_end_ids(self, model_eos_token_ids: list[int]) -> list[int]:
        """eos_token first, then the model's own stop ids, then the document end token if known."""
        ids = [self.eos_token_id, *model_eos_token_ids]
        document_end = self.backend.token_to_id(DOCUMENT_END_TOKEN)
        if document_end is not None:
            ids.append(document_end)
        return list(dict.fromkeys(ids))

    def _add_declared_tokens(self) -> None:
        """Make tokenizer.json agree with the added tokens that tokenizer_config.json declares.

        transformers adds a declared token that tokenizer.json lacks; an id that disagrees would
        silently shift tokens, so it is an error here.
        """
        declared = self.config.get("added_tokens_decoder") or {}
        if not isinstance(declared, Mapping):
            raise ValueError(f"{self.source}: 'added_tokens_decoder' must map ids to tokens")
        for key, entry in declared.items():
            if not str(key).isdigit() or not isinstance(entry, Mapping) or not isinstance(entry.get("content"), str):
                raise ValueError(
                    f"{self.source}: added_tokens_decoder entry {key!r} needs an integer id and a 'content' string"
                )
        for key in sorted(declared, key=int):
            self._add_declared_token(int(key), declared[key])

    def _add_declared_token(self, index: int, entry: Mapping[str, Any]) -> None:
        content = entry["content"]
        if self.backend.token_to_id(content) is None:
            flags = {name: bool(entry.get(name, False)) for name in ("single_word", "lstrip", "rstrip", "special")}
            normalized = bool(entry.get("normalized", not flags["special"]))
            self.backend.add_tokens([tokenizers.AddedToken(content, normalized=normalized, **flags)])
        actual = self.backend.token_to_id(content)
        if actual != index:
            raise ValueError(
                f"{self.source}: added_tokens_decoder gives {content!r} id {index}, "
                f"but tokenizer.json gives it id {actual}"
            )

    def _added_tokens_decoder(self) -> dict[str, dict[str, Any]]:
        decoder = self.backend.get_added_tokens_decoder()
        return {
            str(index): {
                "content": token.content,
                "lstrip": token.lstrip,
                "normalized": token.normalized,
                "rstrip": token.rstrip,
                "single_word": token.single_word,
                "special": token.special,
            }
            for index, token in sorted(decoder.items())
        }

    def _template_tokens(self) -> dict[str, str]:
        """The named special tokens a Jinja template may read (e.g. ``{{ eos_token }}``)."""
        tokens = {key: _token_text(self.config.get(key), key, self.source) for key in TEMPLATE_TOKEN_KEYS}
        tokens.update(eos_token=self.eos_token, pad_token=self.pad_token)
        return {key: value for key, value in tokens.items() if value is not None}


# ----- loading ------------------------------------------------------------------------------------


def load_tokenizer(folder_or_repo_id: str | os.PathLike | None = None) -> Tokenizer:
    """Load the tokenizer of a model folder (or hub repo id; ``None`` means the project's tiny model).

    Reads tokenizer.json and tokenizer_config.json; a chat_template.jinja file, when present, wins
    over the config's template (as in transformers). The stop ids of generation_config.json and
    config.json are added to ``eos_token_ids``.
    """
    folder = resolve_model_dir(folder_or_repo_id)
    tokenizer_file = folder / "tokenizer.json"
    config_file = folder / "tokenizer_config.json"
    for needed in (tokenizer_file, config_file):
        if not needed.is_file():
            raise FileNotFoundError(
                f"{folder}: no {needed.name}; a tokenizer folder needs tokenizer.json and tokenizer_config.json"
            )
    try:
        backend = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    except Exception as error:
        raise ValueError(f"{tokenizer_file}: not a valid tokenizer.json ({error})") from error
    config = _read_json(config_file)
    template_file = folder / "chat_template.jinja"
    if template_file.is_file():
        config["chat_template"] = template_file.read_text(encoding="utf-8")
    return Tokenizer(backend, config, _model_eos_token_ids(folder), source=str(config_file))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _model_eos_token_ids(folder: Path) -> list[int]:
    """The stop ids in generation_config.json and config.json (an int or a list of ints each)."""
    ids: list[int] = []
    for name in ("generation_config.json", "config.json"):
        path = folder / name
        if not path.is_file():
            continue
        value = _read_json(path).get("eos_token_id")
        values = value if isinstance(value, list) else [] if value is None else [value]
        if not all(isinstance(item, int) and not isinstance(item, bool) for item in values):
            raise ValueError(f"{path}: 'eos_token_id' must be an int or a list of ints, got {value!r}")
        ids.extend(values)
    return list(dict.fromkeys(ids))


def _token_text(value: Any, key: str, source: str) -> str | None:
    """A token as tokenizer_config.json writes it: a string, or (older files) {"content": ...}."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{source}: {key!r} must be a token string, got {value!r}")


def _default_template(value: Any, source: str) -> str | None:
    """The chat template string; a list of named templates (an older format) gives its 'default'."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, Mapping)}
        if isinstance(named.get("default"), str):
            return named["default"]
    raise ValueError(f"{source}: 'chat_template' must be a string or a list of named templates with a 'default'")


# ----- messages -----------------------------------------------------------------------------------


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copy the messages the way transformers does before rendering.

    Keys whose value is None are dropped (APIs send ``content=None``; templates test for a missing
    key), and reasoning given as "thinking" or "reasoning" is also put under "reasoning_content".
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty: a chat needs at least one message")
    normalized = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"message {index} is a {type(message).__name__}, expected a dict with 'role' and 'content'")
        message = {key: value for key, value in message.items() if value is not None}
        if not isinstance(message.get("role"), str):
            raise ValueError(f"message {index} has no 'role' string: {message!r}")
        reasoning = next((message[key] for key in REASONING_KEYS if key in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        normalized.append(message)
    return normalized


def uses_tools(messages: Sequence[Mapping[str, Any]]) -> bool:
    return any(message.get("role") == "tool" or message.get("tool_calls") for message in messages)


# ----- the Qwen3 chat format in Python ------------------------------------------------------------


def render_qwen3_chat(
    messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False, enable_thinking: bool = True
) -> str:
    """The Qwen3 chat template, written out (byte-identical to the Jinja original; tools excepted).

    Every turn is ``<|im_start|>{role}\\n{content}<|im_end|>\\n``. The twist is the reasoning of
    assistant turns: it is shown (as a ``<think>`` block) only after the last user query, i.e. in the
    turns the model is producing for that query now. Reasoning from earlier rounds is dropped, so
    a long chat does not carry every old chain of thought.

    Where the Jinja template would silently render nothing (an unknown role, or content that is not a
    string), this raises instead.
    """
    messages = normalize_messages(messages)
    for index, message in enumerate(messages):
        _check_qwen3_message(index, message)
    parts = []
    if messages[0]["role"] == "system":
        parts.append(_turn("system", messages[0]["content"]))
    last_query = _last_query_index(messages)
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "user" or (role == "system" and index > 0):
            parts.append(_turn(role, message["content"]))
        elif role == "assistant":
            is_last = index == len(messages) - 1
            parts.append(_qwen3_assistant_turn(message, after_last_query=index > last_query, is_last=is_last))
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
        if not enable_thinking:
            parts.append("<think>\n\n</think>\n\n")
    return "".join(parts)


def _turn(role: str, content: str) -> str:
    return f"<|im_start|>{role}\n{content}<|im_end|>\n"


def _qwen3_assistant_turn(message: Mapping[str, Any], after_last_query: bool, is_last: bool) -> str:
    """An assistant turn; its reasoning appears only after the last query (always so in the final turn)."""
    reasoning, answer = _reasoning_and_answer(message)
    if after_last_query and (is_last or reasoning):
        body = "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n" + answer.lstrip("\n")
    else:
        body = answer
    return f"<|im_start|>assistant\n{body}<|im_end|>\n"


def _reasoning_and_answer(message: Mapping[str, Any]) -> tuple[str, str]:
    """Split an assistant message into reasoning and answer.

    The reasoning is ``reasoning_content`` when given; otherwise whatever stands between <think>
    and the first </think> in the content, with the answer being what follows the last </think>.
    """
    if "reasoning_content" in message:
        return message["reasoning_content"], message["content"]
    return split_reasoning(message["content"])


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, answer) of an assistant reply: what stands between <think> and the first
    </think>, and what follows the last </think>; ("", text) when no think block was closed."""
    if "</think>" not in text:
        return "", text
    reasoning = text.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
    answer = text.split("</think>")[-1].lstrip("\n")
    return reasoning, answer


def _last_query_index(messages: Sequence[Mapping[str, Any]]) -> int:
    """Index of the last user message that is a real query (a tool result wrapped as a user
    message does not count); the last index when there is none."""
    for index in range(len(messages) - 1, -1, -1):
        content = messages[index]["content"]
        is_tool_result = content.startswith("<tool_response>") and content.endswith("</tool_response>")
        if messages[index]["role"] == "user" and not is_tool_result:
            return index
    return len(messages) - 1


def _check_qwen3_message(index: int, message: Mapping[str, Any]) -> None:
    role = message["role"]
    if role not in QWEN3_ROLES:
        raise ValueError(
            f"message {index}: role {role!r} is not one of {', '.join(QWEN3_ROLES)} "
            "(tool messages are rendered by Tokenizer.apply_chat_template through the Jinja template)"
        )
    if not isinstance(message.get("content"), str):
        got = type(message["content"]).__name__ if "content" in message else "nothing"
        raise TypeError(f"message {index} ({role}): 'content' must be a string (use '' for an empty turn), got {got}")
    if not isinstance(message.get("reasoning_content", ""), str):
        raise TypeError(f"message {index} ({role}): 'reasoning_content' must be a string")


# ----- any chat template, rendered with Jinja ----------------------------------------------------


def render_jinja_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = False,
    tools: Sequence[Mapping[str, Any]] | None = None,
    **variables: Any,
) -> str:
    """Render a chat template the way ``transformers`` does: same sandbox, filters and globals.

    ``variables`` become template variables (``enable_thinking``, ``eos_token``, ...).
    """
    if tools is not None and not all(isinstance(tool, Mapping) for tool in tools):
        raise TypeError("tools must be a list of JSON-schema dicts")
    return _compile_template(template).render(
        messages=normalize_messages(messages),
        tools=None if tools is None else [dict(tool) for tool in tools],
        documents=None,
        add_generation_prompt=add_generation_prompt,
        **variables,
    )


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks the assistant's text for training masks
    (TRL uses it); rendering text, it just renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _TemplateNamespace(jinja2.utils.Namespace):
    """Jinja's ``namespace()``, refusing underscore names so a template cannot reach Python internals
    through it (transformers guards it the same way)."""

    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attributes = dict(*args, **kwargs)
        for name in attributes:
            _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, attributes)

    def __setitem__(self, name, value):
        _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates may not set the attribute {name!r} on a namespace")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """Like transformers' ``tojson``: plain json.dumps, without Jinja's HTML escaping."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):
    return datetime.now().strftime(format)


@lru_cache(maxsize=16)
def _compile_template(template: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals.update(
        raise_exception=_raise_exception, strftime_now=_strftime_now, namespace=_TemplateNamespace
    )
    return environment.from_string(template)
