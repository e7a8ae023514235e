"""Attaching the row engine to the app (``app.engine``)."""

from __future__ import annotations

from typing import Any

from rowforge.server.tables.engine.executor import RowEngine


def install_engine(app: Any) -> RowEngine:
    """``app.engine``, created on first call (idempotent).

    Also creates ``app.sandbox`` (the Python-column :class:`SandboxPool`, started on first use)
    when no other component did, and stops both when the app stops.
    """
    engine = getattr(app, "engine", None)
    if isinstance(engine, RowEngine):
        return engine
    engine = RowEngine(app)
    app.engine = engine
    if getattr(app, "sandbox", None) is None:
        engine._own_sandbox = app.sandbox = engine.make_sandbox()
        on_start = getattr(app, "on_start", None)
        if on_start is not None:  # the pool starts lazily; crash leftovers go now
            on_start(app.sandbox.sweep_leftovers)
    on_stop = getattr(app, "on_stop", None)
    if on_stop is not None:
        on_stop(engine.close)
    return engine
