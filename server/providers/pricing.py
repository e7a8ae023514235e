"""What a call costs, from litellm's local price map read as data (no litellm import, no call).

The map (``model_prices_and_context_window_backup.json`` inside the litellm package, the one
litellm itself uses with ``LITELLM_LOCAL_MODEL_COST_MAP``) is parsed once. A route is looked up
the way litellm's ``cost_per_token`` does for plain token usage: the route itself, then the
model name without its provider prefix when the entry belongs to that provider; the price is
``prompt * input_cost_per_token + completion * output_cost_per_token``, with the
``*_above_<N>k_tokens`` rates when the prompt is longer than N thousand tokens, and the
``off_peak_pricing`` rates (which replace the others) while one of the entry's off-peak windows
is open, read as litellm reads them (UTC hours, optional weekdays on a named calendar).
``tests/unit/test_providers_pricing.py`` checks it against ``litellm.cost_per_token``.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from rowforge.server.providers.results import Usage

if TYPE_CHECKING:
    from rowforge.server.providers.registry import ModelSpec

PRICE_MAP = "model_prices_and_context_window_backup.json"
_TIER = re.compile(r"^input_cost_per_token_above_(\d+)k_tokens$")


def litellm_folder() -> Path | None:
    """Where the litellm package is installed (found without importing it)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def price_map() -> Mapping[str, Any]:
    """litellm's price map (empty when litellm is not installed)."""
    folder = litellm_folder()
    if folder is None or not (folder / PRICE_MAP).is_file():
        return {}
    data = orjson.loads((folder / PRICE_MAP).read_bytes())
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def model_entry(route: str, provider: str | None = None) -> Mapping[str, Any] | None:
    """The price-map entry of a litellm route, or ``None``."""
    prices = price_map()
    entry = prices.get(route)
    if entry is not None:
        return entry
    prefix, _, name = route.partition("/")
    if not name:
        return None
    owner = provider or prefix
    entry = prices.get(name)
    if entry is not None and entry.get("litellm_provider") in (owner, f"text-completion-{owner}"):
        return entry
    return None


def cost_usd(spec: ModelSpec, usage: Usage, at: datetime | None = None) -> float | None:
    """The call's price in USD: 0 for built-in models, ``None`` when the map has no price.

    ``at`` is the billing moment (default now), which matters for off-peak prices.
    """
    if spec.transport == "builtin":
        return 0.0
    entry = model_entry(spec.route)
    if entry is None:
        return None
    return token_cost(entry, usage.prompt_tokens, usage.completion_tokens, at)


def token_cost(entry: Mapping[str, Any], prompt_tokens: int, completion_tokens: int,
               at: datetime | None = None) -> float | None:
    """The price of ``prompt_tokens`` in and ``completion_tokens`` out under one map entry."""
    input_rate = entry.get("input_cost_per_token")
    output_rate = entry.get("output_cost_per_token", 0.0)
    if input_rate is None:
        return None
    threshold = 0
    for key in entry:
        match = _TIER.match(key)
        if match and prompt_tokens > int(match.group(1)) * 1000 \
                and int(match.group(1)) * 1000 > threshold:
            threshold = int(match.group(1)) * 1000
            suffix = f"_above_{match.group(1)}k_tokens"
            input_rate = entry[key]
            output_rate = entry.get(f"output_cost_per_token{suffix}", output_rate)
    off_peak = entry.get("off_peak_pricing")
    if isinstance(off_peak, Mapping) and is_off_peak(off_peak, at):
        input_rate = _rate(off_peak.get("input_cost_per_token"), input_rate)
        output_rate = _rate(off_peak.get("output_cost_per_token"), output_rate)
    return float(prompt_tokens * input_rate + completion_tokens * (output_rate or 0.0))


def _rate(value: object, standard: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return standard
    return value


_WEEKDAYS = {"mon": 1, "tue": 2, "tues": 2, "wed": 3, "thu": 4, "thur": 4, "thurs": 4, "fri": 5,
             "sat": 6, "sun": 7, "monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4,
             "friday": 5, "saturday": 6, "sunday": 7}


def is_off_peak(block: Mapping[str, Any], at: datetime | None = None) -> bool:
    """Whether ``at`` (default now) falls in an ``off_peak_pricing`` block's windows.

    ``hours_utc`` ("HH:MM-HH:MM" or a list; a window may wrap midnight, start == end is the
    whole day) applies every day; each entry of ``windows`` applies on its ``weekdays`` (ISO
    numbers or names) read on the ``weekday_timezone`` calendar (UTC by default).
    """
    moment = at or datetime.now(UTC)
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(
        tzinfo=UTC)
    if _in_windows(_strings(block.get("hours_utc")), moment.time()):
        return True
    rules = block.get("windows")
    if isinstance(rules, str) or not isinstance(rules, Sequence):
        return False
    calendar: Any = UTC
    zone = block.get("weekday_timezone")
    if isinstance(zone, str) and zone.strip():
        try:
            from zoneinfo import ZoneInfo

            calendar = ZoneInfo(zone.strip())
        except (ValueError, LookupError):
            calendar = UTC
    for rule in rules:
        if not isinstance(rule, Mapping):
            continue
        days = rule.get("weekdays")
        if days is not None:
            if isinstance(days, str) or not isinstance(days, Sequence):
                continue
            allowed = {_weekday(day) for day in days}
            if moment.astimezone(calendar).isoweekday() not in allowed:
                continue
        if _in_windows(_strings(rule.get("hours_utc")), moment.time()):
            return True
    return False


def _weekday(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= 7 else None
    if isinstance(value, str):
        return _WEEKDAYS.get(value.strip().lower())
    return None


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _in_windows(windows: tuple[str, ...], now: time) -> bool:
    for window in windows:
        try:
            start_text, end_text = window.split("-")
            start = datetime.strptime(start_text.strip(), "%H:%M").time()
            end = datetime.strptime(end_text.strip(), "%H:%M").time()
        except ValueError:
            continue
        if start < end:
            if start <= now < end:
                return True
        elif now >= start or now < end:
            return True
    return False
