"""``docs/config.md``, generated from :class:`~rowforge.server.config.Settings` (its ``#:``
comments, defaults and the ``serve`` flags) and the ``[[models]]`` entry schema, so the page
cannot drift from the code: ``python scripts/gen_config_docs.py`` rewrites it and a test checks
it is current."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

from rowforge.server import config
from rowforge.server.config import MiB, Settings

HEADER = """\
# Server configuration

<!-- Generated from server/config.py by `python scripts/gen_config_docs.py`; do not edit. -->

Settings come from the defaults below, then a TOML file (`rowforge serve --config FILE`, or
`ROWFORGE_CONFIG=FILE`; the settings at the top level or under a `[rowforge]` table), then
`ROWFORGE_<SETTING>` environment variables, then the command-line flags of `rowforge serve`.
An unknown key or a value of the wrong type stops the server at start-up with one line naming
the file or variable and the key (exit code 2). Booleans in variables: `1/true/yes/on`,
`0/false/no/off`.

| setting | default | environment variable | flag | meaning |
|---|---|---|---|---|
"""

MODELS = """
## `[[models]]` entries

Each entry declares one model callers may name, besides the built-in offline ones
(`rowforge/chat`, `rowforge/embed`, `rowforge/rerank`, and `rowforge/minilm` when the `embed`
extra is installed). In `ROWFORGE_MODELS` the same entries are a JSON list.

| field | default | meaning |
|---|---|---|
"""

ALIASES = """
An entry with `alias_of` instead gives another model (built-in or configured, not an alias) a
second id, and answers exactly like it; it takes only `id`, `alias_of` and `name`:

```toml
[[models]]
id = "openai/gpt-5.2"
alias_of = "rowforge/chat"
```

`examples/offline.toml` maps every model name the seeds' programs use this way.
"""


def field_comments() -> dict[str, str]:
    """The ``#:`` comment right above each field of ``Settings``, joined into one line."""
    source = inspect.getsource(config)
    lines = source.splitlines()
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    comments: dict[str, str] = {}
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            text: list[str] = []
            i = item.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#:"):
                text.insert(0, lines[i].strip()[2:].strip())
                i -= 1
            comments[item.target.id] = " ".join(text)
    return comments


def serve_flags() -> dict[str, str]:
    """Setting name -> its ``rowforge serve`` flag."""
    from rowforge.server.cli import add_server_commands

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_server_commands(sub)
    serve = sub.choices["serve"]
    return {a.dest: a.option_strings[-1] for a in serve._actions
            if a.option_strings and a.dest in Settings.__dataclass_fields__}


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and value >= MiB and value % MiB == 0:
        return f"`{value}` ({value // MiB} MiB)"
    if isinstance(value, tuple) and not value:
        return "none"
    if value == "":
        return "empty"
    if isinstance(value, Path):
        value = str(value)
    return f"`{value}`" if not isinstance(value, str) else f'`"{value}"`'


def _rst_to_md(text: str) -> str:
    text = re.sub(r":\w+:`([^`]+)`", r"`\1`", text)
    return text.replace("``", "`").replace("|", "\\|")


def model_field_docs() -> dict[str, str]:
    """Descriptions of the model entry fields, from ``ModelSpec``'s Attributes section."""
    from rowforge.server.providers.registry import ModelSpec

    doc = inspect.cleandoc(ModelSpec.__doc__ or "").split("Attributes:", 1)[1]
    entries: dict[str, str] = {}
    current: list[str] = []
    for line in doc.splitlines():
        match = re.match(r"^    ([\w /]+): (.*)$", line)
        if match:
            current = [match.group(2)]
            for name in match.group(1).split(" / "):
                entries[name.strip()] = current  # type: ignore[assignment]
        elif line.strip() and current:
            current.append(line.strip())
    return {k: " ".join(v) for k, v in entries.items()}


def render() -> str:
    """The whole page."""
    comments, flags = field_comments(), serve_flags()
    rows = []
    for f in dataclasses.fields(Settings):
        default = (f.default if f.default is not dataclasses.MISSING
                   else f.default_factory())  # type: ignore[operator]
        flag = f"`{flags[f.name]}`" if f.name in flags else ""
        rows.append(f"| `{f.name}` | {_default(default)} | `ROWFORGE_{f.name.upper()}` | {flag} "
                    f"| {_rst_to_md(comments[f.name])} |")
    from rowforge.server.providers.registry import ModelConfig

    docs = model_field_docs()
    model_rows = []
    for name, info in ModelConfig.model_fields.items():
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = _default(info.default_factory())  # type: ignore[call-arg]
        else:
            default = "none" if info.default is None else _default(info.default)
        model_rows.append(f"| `{name}` | {default} | {_rst_to_md(docs.get(name, ''))} |")
    return (HEADER + "\n".join(rows) + "\n" + MODELS + "\n".join(model_rows) + "\n" + ALIASES)


def missing_descriptions() -> list[str]:
    """Settings and model fields without a description (each needs one)."""
    from rowforge.server.providers.registry import ModelConfig

    docs = model_field_docs()
    return ([f"Settings.{k}" for k, v in field_comments().items() if not v]
            + [f"ModelSpec.{k}" for k in ModelConfig.model_fields if not docs.get(k)])
