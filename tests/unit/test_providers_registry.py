"""Model registry: built-ins, config validation, lookups by id and capability."""

from __future__ import annotations

import pytest

from rowforge.server.errors import InvalidArgument, NotFound
from rowforge.server.providers import minilm
from rowforge.server.providers.registry import ModelRegistry, ModelSpec

GPT = {"id": "openai/gpt-4o-mini", "route": "openai/gpt-4o-mini", "api_key_env": "OPENAI_API_KEY",
       "capabilities": ["chat", "image"], "context_length": 128000, "rpm": 500, "tpm": 200000}
EMBED = {"id": "openai/text-embedding-3-small", "route": "openai/text-embedding-3-small",
         "capabilities": ["embed"], "embedding_size": 1536,
         "api_base": "http://127.0.0.1:9/v1/"}


def test_builtins_are_always_there() -> None:
    registry = ModelRegistry.from_config([])
    ids = [s.id for s in registry.list()]
    assert {"rowforge/chat", "rowforge/embed", "rowforge/rerank"} <= set(ids)
    assert ids == sorted(ids)
    chat = registry.get("rowforge/chat")
    assert chat.capabilities == {"chat", "image", "audio"}
    assert chat.context_length == 32768 and chat.transport == "builtin"
    assert registry.get("rowforge/embed").embedding_size == 384
    assert ("rowforge/minilm" in registry) == minilm.available()


def test_config_entries_become_specs() -> None:
    registry = ModelRegistry.from_config([GPT, EMBED])
    spec = registry.get("openai/gpt-4o-mini")
    assert spec == ModelSpec(id="openai/gpt-4o-mini", route="openai/gpt-4o-mini",
                             api_key_env="OPENAI_API_KEY",
                             capabilities=frozenset({"chat", "image"}), context_length=128000,
                             rpm=500, tpm=200000, owned_by="openai", name="openai/gpt-4o-mini",
                             transport="openai")
    assert registry.get("openai/text-embedding-3-small").api_base == "http://127.0.0.1:9/v1"


def test_list_filters_by_all_capabilities() -> None:
    registry = ModelRegistry.from_config([GPT, EMBED])
    assert [s.id for s in registry.list(["chat", "image"])] == ["openai/gpt-4o-mini",
                                                               "rowforge/chat"]
    assert [s.id for s in registry.list(["audio"])] == ["rowforge/chat"]
    assert registry.list(["chat", "embed"]) == []
    with pytest.raises(InvalidArgument) as info:
        registry.list(["telepathy"])
    assert info.value.reason == "UNKNOWN_CAPABILITY"


def test_get_unknown_model_is_not_found() -> None:
    with pytest.raises(NotFound) as info:
        ModelRegistry.from_config([]).get("nope/model")
    assert info.value.reason == "MODEL_NOT_FOUND"
    assert info.value.metadata == {"model": "nope/model"}


def test_require_checks_the_capability() -> None:
    registry = ModelRegistry.from_config([GPT])
    assert registry.require("openai/gpt-4o-mini", "image").id == "openai/gpt-4o-mini"
    with pytest.raises(InvalidArgument) as info:
        registry.require("openai/gpt-4o-mini", "embed")
    assert info.value.reason == "MODEL_CAPABILITY_MISSING"
    assert info.value.field_violations[0].field == "model"
    assert info.value.metadata == {"model": "openai/gpt-4o-mini", "capability": "embed"}
    with pytest.raises(NotFound):
        registry.require("nope", "chat")


def test_defaults_builtin_configured_and_missing() -> None:
    registry = ModelRegistry.from_config([GPT, EMBED], default_chat="openai/gpt-4o-mini")
    assert registry.default("chat").id == "openai/gpt-4o-mini"
    assert registry.default("embed").id == "rowforge/embed"
    assert registry.default("image").id == "rowforge/chat"
    bare = ModelRegistry.from_config([GPT], include_builtins=False)
    assert bare.default("chat").id == "openai/gpt-4o-mini"
    with pytest.raises(NotFound) as info:
        bare.default("embed")
    assert info.value.metadata == {"capability": "embed"}
    with pytest.raises(ValueError, match="default chat model 'rowforge/embed'"):
        ModelRegistry.from_config([], default_chat="rowforge/embed")


@pytest.mark.parametrize(("entry", "expected"), [
    ({**GPT, "rpm": -1}, r"models\[0\] \(openai/gpt-4o-mini\): rpm: .*greater than or equal"),
    ({**GPT, "capabilities": ["chat", "vision"]}, r"capabilities: .*unknown capabilities"),
    ({**GPT, "capabilities": []}, r"capabilities: .*at least 1"),
    ({k: v for k, v in GPT.items() if k != "route"}, r"route: Field required"),
    ({**GPT, "api_key": "sk-secret"}, r"api_key: Extra inputs are not permitted"),
    ({**GPT, "api_key_env": "not a var"}, r"api_key_env: String should match pattern"),
    ({**GPT, "api_base": "not a url"}, r"api_base: "),
    ({**EMBED, "embedding_size": 0}, r"embedding_size: required"),
    ({**GPT, "route": "builtin/chat"}, r'route: .*reserved.*alias_of = "rowforge/chat"'),
    ({"id": "a", "alias_of": "rowforge/chat", "rpm": 5}, r"models\[0\] \(a\): rpm: Extra"),
    ({"id": "a", "alias_of": "nope/x"}, r"alias_of: no model 'nope/x'.*rowforge/chat"),
    ({"id": "", "alias_of": "rowforge/chat"}, r"models\[0\]: id: "),
    ({**GPT, "context_length": 0}, r"context_length: .*greater than 0"),
    ({**GPT, "id": ""}, r"models\[0\]: id: "),
    ("not a mapping", r"models\[0\]: "),
])
def test_bad_config_names_entry_and_field(entry: object, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        ModelRegistry.from_config([entry])  # type: ignore[list-item]


def test_duplicate_and_reserved_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"models\[1\] \(openai/gpt-4o-mini\): id: .*already"):
        ModelRegistry.from_config([GPT, GPT])
    with pytest.raises(ValueError, match="built-in ids are reserved"):
        ModelRegistry.from_config([{**GPT, "id": "rowforge/chat"}])


def test_aliases_answer_as_their_target_whatever_the_order() -> None:
    registry = ModelRegistry.from_config([
        {"id": "gpt-5.2", "alias_of": "openai/gpt-4o-mini"},   # before its target
        GPT,
        {"id": "openai/gpt-5.2", "alias_of": "rowforge/chat", "name": "Seed chat"},
        {"id": "ellm/BAAI/bge-m3", "alias_of": "rowforge/embed"},
    ])
    seed = registry.require("openai/gpt-5.2", "chat")
    chat = registry.get("rowforge/chat")
    assert (seed.route, seed.transport, seed.capabilities) == (chat.route, "builtin",
                                                                chat.capabilities)
    assert seed.name == "Seed chat"
    assert registry.require("ellm/BAAI/bge-m3", "embed").embedding_size == 384
    assert registry.get("gpt-5.2").route == "openai/gpt-4o-mini"
    assert registry.get("gpt-5.2").name == "gpt-5.2 (alias of openai/gpt-4o-mini)"
    assert "openai/gpt-5.2" in [s.id for s in registry.list(["chat"])]


def test_aliases_cannot_chain_or_take_a_taken_id() -> None:
    with pytest.raises(ValueError, match=r"models\[1\] \(b\): alias_of: no model 'a'"):
        ModelRegistry.from_config([{"id": "a", "alias_of": "rowforge/chat"},
                                   {"id": "b", "alias_of": "a"}])
    with pytest.raises(ValueError, match=r"models\[1\] \(a\): id: .*already declared"):
        ModelRegistry.from_config([{"id": "a", "alias_of": "rowforge/chat"},
                                   {"id": "a", "alias_of": "rowforge/embed"}])
    with pytest.raises(ValueError, match="built-in ids are reserved"):
        ModelRegistry.from_config([{"id": "rowforge/chat", "alias_of": "rowforge/embed"}])
