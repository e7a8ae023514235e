"""The client's version (sent in the user agent)."""

try:
    from importlib.metadata import version as _version

    __version__ = _version("rowforge")
except Exception:  # not installed (running from a checkout)
    __version__ = "0.0.0"
