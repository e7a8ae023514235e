"""The server's event loop choice and the start-up heap freeze."""

from __future__ import annotations

import gc
import importlib.util

import pytest

from rowforge.server.config import load_settings
from rowforge.server.loop import freeze_startup_heap, loop_name, run

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def which() -> str:
    return loop_name()


def test_asyncio_when_asked() -> None:
    assert run(which(), "asyncio") == "asyncio"


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed")
def test_auto_and_uvloop_pick_uvloop() -> None:
    assert run(which(), "auto") == "uvloop"
    assert run(which(), "uvloop") == "uvloop"


def test_unknown_choice_is_refused() -> None:
    with pytest.raises(SystemExit, match="event_loop must be one of"):
        run(which(), "trio")


def test_settings_default_and_environment() -> None:
    assert load_settings(env={}).event_loop == "auto"
    assert load_settings(env={}).gc_freeze is True
    assert load_settings(env={"ROWFORGE_EVENT_LOOP": "asyncio",
                              "ROWFORGE_GC_FREEZE": "false"}).gc_freeze is False


def test_freeze_moves_survivors_out_of_collections() -> None:
    try:
        frozen = freeze_startup_heap()
        assert frozen > 1000 and gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
