"""Which models exist and what they can do.

A :class:`ModelSpec` describes one model: the id callers use, the litellm route it is served
through, where and with which key (the *name* of an environment variable, never the key) and
its limits. :class:`ModelRegistry` holds the configured models plus the built-in offline ones
(``rowforge/chat``, ``rowforge/embed``, ``rowforge/rerank`` and, when its optional packages are
installed, ``rowforge/minilm``). A config entry with ``alias_of`` gives another model a second
id (``openai/gpt-5.2`` answered by ``rowforge/chat``), which is how the seeds' programs run
offline (``examples/offline.toml``).
"""

from __future__ import annotations

import builtins
import dataclasses
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic

from rowforge.server.errors import InvalidArgument, NotFound, shown
from rowforge.server.providers.routes import default_transport

CAPABILITIES = frozenset({"chat", "embed", "rerank", "image", "audio"})
BUILTIN_ROUTE_PREFIX = "builtin/"


@dataclass(frozen=True)
class ModelSpec:
    """One model.

    Attributes:
        id: What callers name, e.g. ``openai/gpt-4o-mini`` or ``rowforge/chat``.
        route: The litellm model string (``openai/gpt-4o-mini``); ``builtin/...`` for the
            in-process offline models.
        api_base: Provider URL override (``http://127.0.0.1:8000/v1``), or ``None``.
        api_key_env: Name of the environment variable holding the API key, or ``None``.
        capabilities: Subset of ``chat``, ``embed``, ``rerank``, ``image``, ``audio``.
        context_length: Prompt plus output tokens the model accepts.
        languages: Language codes the model handles well.
        rpm / tpm: Requests / tokens per minute allowed (0 = unlimited).
        embedding_size: Vector size of an embedding model (0 otherwise).
        owned_by: Who provides the model.
        name: Display name.
        max_output_tokens: Output cap used when a caller sets no ``max_tokens``.
        transport: Which backend serves it: ``builtin`` (in-process), ``litellm``, or
            ``openai`` (the OpenAI HTTP protocol, see :mod:`openai_backend`).
        max_connections: Keep-alive connections to its host (``openai`` transport); 0 uses
            the server's default (its model plus batch concurrency).
    """

    id: str
    route: str
    api_base: str | None = None
    api_key_env: str | None = None
    capabilities: frozenset[str] = frozenset({"chat"})
    context_length: int = 8192
    languages: tuple[str, ...] = ("en",)
    rpm: int = 0
    tpm: int = 0
    embedding_size: int = 0
    owned_by: str = ""
    name: str = ""
    max_output_tokens: int = 4096
    transport: str = "litellm"
    max_connections: int = 0


class ModelConfig(pydantic.BaseModel):
    """One ``models`` entry of the server config (validated before it becomes a spec)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    id: str = pydantic.Field(min_length=1, max_length=200, pattern=r"^[\w.:@/+-]+$")
    route: str = pydantic.Field(min_length=1, max_length=300)
    api_base: pydantic.AnyHttpUrl | None = None
    api_key_env: str | None = pydantic.Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    capabilities: builtins.list[str] = pydantic.Field(min_length=1)
    context_length: int = pydantic.Field(default=8192, gt=0)
    languages: builtins.list[str] = pydantic.Field(default_factory=lambda: ["en"])
    rpm: int = pydantic.Field(default=0, ge=0)
    tpm: int = pydantic.Field(default=0, ge=0)
    embedding_size: int = pydantic.Field(default=0, ge=0)
    owned_by: str = ""
    name: str = ""
    max_output_tokens: int = pydantic.Field(default=4096, gt=0)
    transport: Literal["openai", "litellm"] | None = None
    max_connections: int = pydantic.Field(default=0, ge=0, le=4096)

    @pydantic.field_validator("capabilities")
    @classmethod
    def _known_capabilities(cls, value: builtins.list[str]) -> builtins.list[str]:
        unknown = sorted(set(value) - CAPABILITIES)
        if unknown:
            raise ValueError(f"unknown capabilities {unknown}; "
                             f"allowed: {', '.join(sorted(CAPABILITIES))}")
        return value

    @pydantic.field_validator("route")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value.startswith(BUILTIN_ROUTE_PREFIX):
            builtin_id = "rowforge/" + value.removeprefix(BUILTIN_ROUTE_PREFIX)
            raise ValueError(f"routes starting with {BUILTIN_ROUTE_PREFIX!r} are reserved for "
                             f"the built-in models; to serve this id with one, write "
                             f'alias_of = "{builtin_id}" instead of route')
        return value

    @pydantic.model_validator(mode="after")
    def _embedding_size_for_embedders(self) -> ModelConfig:
        if "embed" in self.capabilities and self.embedding_size <= 0:
            raise ValueError("embedding_size: required (> 0) for a model with the embed "
                             "capability")
        return self

    def to_spec(self) -> ModelSpec:
        return ModelSpec(
            id=self.id, route=self.route,
            api_base=str(self.api_base).rstrip("/") if self.api_base else None,
            api_key_env=self.api_key_env, capabilities=frozenset(self.capabilities),
            context_length=self.context_length, languages=tuple(self.languages), rpm=self.rpm,
            tpm=self.tpm, embedding_size=self.embedding_size,
            owned_by=self.owned_by or self.id.split("/", 1)[0], name=self.name or self.id,
            max_output_tokens=self.max_output_tokens,
            transport=self.transport or default_transport(self.route),
            max_connections=self.max_connections)


class AliasConfig(pydantic.BaseModel):
    """A ``models`` entry that gives another model (built-in or configured) a second id.

    The alias answers exactly like its target: same route, capabilities and limits.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    id: str = pydantic.Field(min_length=1, max_length=200, pattern=r"^[\w.:@/+-]+$")
    alias_of: str = pydantic.Field(min_length=1, max_length=200)
    name: str = ""

    def to_spec(self, target: ModelSpec) -> ModelSpec:
        return dataclasses.replace(target, id=self.id,
                                   name=self.name or f"{self.id} (alias of {target.id})")


def _validate_entry(label: str, entry: Any, model: type[pydantic.BaseModel]) -> Any:
    try:
        return model.model_validate(entry)
    except pydantic.ValidationError as exc:
        problems = "; ".join(_problem(err, model) for err in exc.errors())
        raise ValueError(f"{label}: {problems}") from None


def _problem(err: Any, model: type[pydantic.BaseModel]) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "entry"
    text = f"{where}: {err['msg']}"
    if err["type"] == "extra_forbidden":
        match = difflib.get_close_matches(where, list(model.model_fields), n=1, cutoff=0.6)
        if match:
            text += f" (did you mean {match[0]!r}?)"
    return text


def builtin_specs() -> list[ModelSpec]:
    """The offline models that are always there (plus MiniLM when it is installed)."""
    specs = [
        ModelSpec(id="rowforge/chat", route="builtin/chat", transport="builtin",
                  capabilities=frozenset({"chat", "image", "audio"}), context_length=32768,
                  owned_by="rowforge", name="Rowforge built-in chat (offline, deterministic)",
                  max_output_tokens=4096),
        ModelSpec(id="rowforge/embed", route="builtin/embed", transport="builtin", capabilities=frozenset({"embed"}),
                  context_length=8192, embedding_size=384, owned_by="rowforge",
                  name="Rowforge built-in hashing embedder (offline)"),
        ModelSpec(id="rowforge/rerank", route="builtin/rerank", transport="builtin",
                  capabilities=frozenset({"rerank"}), context_length=8192, owned_by="rowforge",
                  name="Rowforge built-in reranker (offline)"),
    ]
    from rowforge.server.providers import minilm

    if minilm.available():
        specs.append(ModelSpec(id=minilm.MODEL_ID, route="builtin/minilm", transport="builtin",
                               capabilities=frozenset({"embed"}), context_length=256,
                               embedding_size=minilm.DIMENSIONS, owned_by="rowforge",
                               name="all-MiniLM-L6-v2 (int8 ONNX, offline)"))
    return specs


# Which built-in answers when no default is configured for a capability.
_BUILTIN_DEFAULTS = {"chat": "rowforge/chat", "image": "rowforge/chat", "audio": "rowforge/chat",
                     "embed": "rowforge/embed", "rerank": "rowforge/rerank"}


@dataclass
class ModelRegistry:
    """The models a server offers, by id.

    Args:
        specs: The models; ids must be unique.
        defaults: Optional ``capability -> model id`` choices for :meth:`default`.
    """

    specs: Iterable[ModelSpec]
    defaults: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_id: dict[str, ModelSpec] = {}
        for spec in self.specs:
            if spec.id in self._by_id:
                raise ValueError(f"model {spec.id!r} is declared twice")
            self._by_id[spec.id] = spec
        self.specs = tuple(self._by_id.values())
        for capability, model_id in self.defaults.items():
            if model_id not in self._by_id or capability not in self._by_id[model_id].capabilities:
                raise ValueError(f"default {capability} model {model_id!r} is not a declared "
                                 f"model with the {capability} capability")

    @classmethod
    def from_config(cls, entries: Sequence[Mapping[str, Any]], include_builtins: bool = True,
                    defaults: Mapping[str, str] | None = None, *,
                    default_chat: str | None = None, default_embed: str | None = None,
                    default_rerank: str | None = None) -> ModelRegistry:
        """Build a registry from config dicts (validated; see :class:`ModelConfig`).

        ``defaults`` (capability -> model id) or the ``default_chat`` / ``default_embed`` /
        ``default_rerank`` shortcuts choose what :meth:`default` returns.

        Raises:
            ValueError: naming the bad entry and field, e.g.
                ``models[1] (openai/gpt): rpm: Input should be greater than or equal to 0``.
        """
        by_id = {s.id: s for s in (builtin_specs() if include_builtins else [])}
        aliases: list[tuple[str, AliasConfig]] = []
        for i, entry in enumerate(entries):
            label = f"models[{i}]"
            if isinstance(entry, Mapping) and isinstance(entry.get("id"), str) and entry["id"]:
                label += f" ({entry['id']})"
            is_alias = isinstance(entry, Mapping) and "alias_of" in entry
            parsed = _validate_entry(label, entry, AliasConfig if is_alias else ModelConfig)
            if parsed.id in by_id or any(a.id == parsed.id for _, a in aliases):
                raise ValueError(f"{label}: id: model {parsed.id!r} is already declared "
                                 "(built-in ids are reserved)")
            if is_alias:
                aliases.append((label, parsed))
            else:
                by_id[parsed.id] = parsed.to_spec()
        # Aliases resolve after every entry is known, so their order does not matter.
        specs = list(by_id.values())
        for label, alias in aliases:
            target = by_id.get(alias.alias_of)
            if target is None:
                raise ValueError(f"{label}: alias_of: no model {alias.alias_of!r} to alias; an "
                                 "alias names a built-in or a configured model (not another "
                                 f"alias): {', '.join(sorted(by_id))}")
            specs.append(alias.to_spec(target))
        chosen = dict(defaults or {})
        for capability, model_id in (("chat", default_chat), ("embed", default_embed),
                                     ("rerank", default_rerank)):
            if model_id:
                chosen[capability] = model_id
        return cls(specs, defaults=chosen)

    def get(self, model_id: str) -> ModelSpec:
        """The model with this id.

        Raises:
            NotFound: reason ``MODEL_NOT_FOUND``, metadata ``model``.
        """
        spec = self._by_id.get(model_id)
        if spec is None:
            raise NotFound(model_not_found_message(model_id), reason="MODEL_NOT_FOUND",
                           metadata={"model": model_id}, resource_type="model",
                           resource_name=model_id)
        return spec

    def require(self, model_id: str, capability: str) -> ModelSpec:
        """The model, checked to have ``capability``.

        Raises:
            NotFound: unknown model (``MODEL_NOT_FOUND``).
            InvalidArgument: the model lacks the capability (``MODEL_CAPABILITY_MISSING``), or
                the capability name is unknown.
        """
        _check_capability(capability)
        spec = self.get(model_id)
        if capability not in spec.capabilities:
            raise capability_missing(spec, capability)
        return spec

    def list(self, capabilities: Iterable[str] = ()) -> list[ModelSpec]:
        """Models having all the given capabilities, sorted by id."""
        wanted = set(capabilities)
        for capability in wanted:
            _check_capability(capability)
        return sorted((s for s in self._by_id.values() if wanted <= s.capabilities),
                      key=lambda s: s.id)

    def default(self, capability: str) -> ModelSpec:
        """The model used for ``capability`` when a caller names none.

        The configured default, else the built-in one, else the first model (by id) with it.

        Raises:
            NotFound: no model has the capability (``MODEL_NOT_FOUND``).
        """
        _check_capability(capability)
        for model_id in (self.defaults.get(capability), _BUILTIN_DEFAULTS.get(capability)):
            if model_id and model_id in self._by_id:
                return self._by_id[model_id]
        candidates = self.list([capability])
        if not candidates:
            raise NotFound(f"No model with the {capability} capability is configured.",
                           reason="MODEL_NOT_FOUND", metadata={"capability": capability},
                           resource_type="model")
        return candidates[0]

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)


def model_not_found_message(model_id: str) -> str:
    """The one wording of an unknown model, wherever it is named."""
    return (f"model {shown(model_id)} does not exist on this server; ListModels "
            "(rowforge models list) shows which do")


def capability_missing(spec: ModelSpec, capability: str) -> InvalidArgument:
    """The error for using a model for something it cannot do."""
    error = InvalidArgument.field(
        "model", f"model {spec.id!r} does not support {capability} "
                 f"(it supports: {', '.join(sorted(spec.capabilities))})",
        reason="MODEL_CAPABILITY_MISSING", metadata={"model": spec.id, "capability": capability})
    return error


def _check_capability(capability: str) -> None:
    if capability not in CAPABILITIES:
        raise InvalidArgument.field(
            "capabilities", f"unknown capability {capability!r}; "
                            f"allowed: {', '.join(sorted(CAPABILITIES))}",
            reason="UNKNOWN_CAPABILITY", metadata={"capability": capability})
