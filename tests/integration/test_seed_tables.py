"""The seed's action-table, chat-table and Python-column examples, end to end over gRPC.

Each test follows the seed's code (``shared/seeds/000_*.txt``, sections 3-4, 9, 10, 12,
15, 16 and 18) step by step through the generated stubs. :class:`Tables` names its methods
after the seed SDK's ``jamai.table.*`` calls so the flow reads the same; models are the
built-in offline ``rowforge/chat`` (the seed's ``openai/gpt-5.2`` is not configured here).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
import pytest

from rowforge.v1 import table_service_pb2 as pb
from tests.integration.generation_support import (
    ACTION,
    CHAT,
    DONE,
    ERROR,
    KNOWLEDGE,
    Metadata,
    download,
    input_col,
    llm_col,
    md,
    python_col,
    struct,
    stub,
    upload,
    value,
)
from tests.support.status import fails

__all__ = ["md", "stub"]  # fixtures

TYPES = {"action": ACTION, "chat": CHAT, "knowledge": KNOWLEDGE}


class Tables:
    """The seed's ``jamai.table`` calls, over the generated TableService stub."""

    def __init__(self, stub: Any, md: Metadata) -> None:
        self.stub, self.md = stub, md

    async def create_table(self, table_type: str, table_id: str,
                           cols: Iterable[pb.Column]) -> pb.Table:
        reply = await self.stub.CreateTable(pb.CreateTableRequest(
            table_type=TYPES[table_type], table_id=table_id, cols=list(cols)), metadata=self.md)
        return reply.table

    async def add_table_rows(self, table_type: str, table_id: str,
                             data: Iterable[Mapping[str, Any]], stream: bool) -> Any:
        """``stream=False``: the AddRowsResponse; ``stream=True``: the list of chunks."""
        rows = [struct(d) for d in data]
        if not stream:
            return await self.stub.AddRows(pb.AddRowsRequest(
                table_type=TYPES[table_type], table_id=table_id, data=rows), metadata=self.md)
        call = self.stub.StreamAddRows(pb.StreamAddRowsRequest(
            table_type=TYPES[table_type], table_id=table_id, data=rows), metadata=self.md)
        return [chunk async for chunk in call]

    async def list_table_rows(self, table_type: str, table_id: str, limit: int = 100,
                              offset: int = 0) -> pb.ListRowsResponse:
        return await self.stub.ListRows(pb.ListRowsRequest(
            table_type=TYPES[table_type], table_id=table_id, limit=limit, offset=offset),
            metadata=self.md)

    async def get_table_row(self, table_type: str, table_id: str, row_id: str) -> pb.Row:
        reply = await self.stub.GetRow(pb.GetRowRequest(
            table_type=TYPES[table_type], table_id=table_id, row_id=row_id), metadata=self.md)
        return reply.row

    async def delete_table(self, table_type: str, table_id: str) -> None:
        await self.stub.DeleteTable(pb.DeleteTableRequest(
            table_type=TYPES[table_type], table_id=table_id), metadata=self.md)


def get_value(row: pb.Row, column: str) -> Any:
    """The seed's ``get_value(row.get(column))``."""
    return value(row.cells[column])


def streamed_text(chunks: list[Any], column: str) -> str:
    """``for chunk in completion: if chunk.output_column_name == column: print(chunk.text)``"""
    return "".join(c.delta.text for c in chunks if c.WhichOneof("event") == "delta"
                   and c.delta.output_column_name == column)


def streamed_row_id(chunks: list[Any]) -> str | None:
    return next((c.row_created.row_id for c in chunks if c.WhichOneof("event") == "row_created"),
                None)


@pytest.fixture
def jamai_table(stub: Any, md: Metadata) -> Tables:
    return Tables(stub, md)


def png(size: tuple[int, int] = (16, 12)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (220, 40, 90)).save(out, format="PNG")
    return out.getvalue()


# -- section 3-4: action tables, add rows ---------------------------------------------------

async def test_action_table_create_and_add_rows(jamai_table, channel, md):
    pytest.importorskip("PIL", reason="Pillow builds the uploaded image")
    table = jamai_table
    await table.create_table("action", "my_table", [
        input_col("input"),
        input_col("image", "file"),
        llm_col("output", "Process: ${input}\nImage: ${image}",
                system_prompt="You are helpful.", temperature=0.7, max_tokens=500),
        python_col("word_count", 'row["word_count"] = str(len(row["output"].split()))'),
    ])

    # Non-streaming
    response = await table.add_table_rows("action", "my_table", [
        {"input": "Hello world"}, {"input": "Goodbye world"}], stream=False)
    output = response.rows[0].columns["output"].text
    assert "Hello world" in output
    assert response.rows[0].columns["word_count"].text == str(len(output.split()))
    assert "Goodbye world" in response.rows[1].columns["output"].text

    # Streaming, and the row id from the stream
    completion = await table.add_table_rows("action", "my_table", [{"input": "Hello"}],
                                            stream=True)
    text = streamed_text(completion, "output")
    assert "Hello" in text
    row_id = streamed_row_id(completion)
    row = await table.get_table_row("action", "my_table", row_id)
    assert get_value(row, "output") == text

    # With file upload: the image reaches the model as an attachment
    image = png()
    uri = await upload(channel, md, "image.png", image)
    response = await table.add_table_rows("action", "my_table", [
        {"image": uri, "input": "Describe this"}], stream=False)
    row_id = response.rows[0].row_id
    output = response.rows[0].columns["output"].text
    assert output.startswith(f"I received an image (image/png, {len(image)} bytes).")
    assert row_id


async def test_column_reference_syntax(jamai_table):
    table = jamai_table
    await table.create_table("action", "translate", [
        input_col("input"), llm_col("italian", 'Translate "${input}" into Italian:')])
    response = await table.add_table_rows("action", "translate", [{"input": "Good morning"}],
                                          stream=False)
    # the built-in model restates the prompt it received
    assert 'Translate "Good morning" into Italian' in response.rows[0].columns["italian"].text


async def test_multi_turn_chat_in_action_tables(jamai_table):
    table = jamai_table
    await table.create_table("action", "assistant", [
        input_col("query"),
        llm_col("response", "${query}", system_prompt="You are helpful.", multi_turn=True,
                max_tokens=500)])
    await table.add_table_rows("action", "assistant", [{"query": "My name is Alice"}],
                               stream=False)
    response = await table.add_table_rows("action", "assistant", [{"query": "What's my name?"}],
                                          stream=False)
    assert response.rows[0].columns["response"].text == "Your name is Alice."


# -- section 9: knowledge table data ----------------------------------------------------------

async def test_knowledge_table_rows_get_their_embeddings(jamai_table):
    table = jamai_table
    await table.create_table("knowledge", "my_kb", [])
    response = await table.add_table_rows("knowledge", "my_kb", [
        {"Title": "Doc1", "Text": "Content here..."}], stream=False)
    columns = response.rows[0].columns
    assert columns["Title Embed"].status == DONE, columns["Title Embed"].error
    assert columns["Text Embed"].status == DONE, columns["Text Embed"].error


# -- section 10: chat tables -------------------------------------------------------------------

async def test_chat_table_remembers_my_name_is_alice(jamai_table):
    table = jamai_table
    await table.create_table("chat", "my_chatbot", [
        input_col("User"),
        llm_col("AI", system_prompt="You are helpful.", max_tokens=500)])

    completion = await table.add_table_rows("chat", "my_chatbot", [{"User": "Hello!"}],
                                            stream=True)
    assert streamed_text(completion, "AI") == "Hello! How can I help you today?"

    # Turn 1
    await table.add_table_rows("chat", "my_chatbot", [{"User": "My name is Alice"}],
                               stream=False)
    # Turn 2 - AI remembers the name from Turn 1
    response = await table.add_table_rows("chat", "my_chatbot", [{"User": "What's my name?"}],
                                          stream=False)
    assert response.rows[0].columns["AI"].text == "Your name is Alice."

    # View conversation history
    rows = await table.list_table_rows("chat", "my_chatbot", limit=100)
    history = [(get_value(r, "User"), get_value(r, "AI")) for r in rows.items]
    assert history == [("Hello!", "Hello! How can I help you today?"),
                       ("My name is Alice", history[1][1]),
                       ("What's my name?", "Your name is Alice.")]


async def test_each_chat_table_is_its_own_conversation_and_rows_of_a_call_are_turns(
        jamai_table):
    table = jamai_table
    for table_id in ("alice_chat", "bob_chat"):
        await table.create_table("chat", table_id, [input_col("User"), llm_col("AI")])
    completion = await table.add_table_rows("chat", "bob_chat", [
        {"User": "My name is Bob"}, {"User": "What's my name?"}], stream=True)
    answers = [c.row_completed.row.columns["AI"].text for c in completion
               if c.WhichOneof("event") == "row_completed"]
    assert answers[1] == "Your name is Bob."
    response = await table.add_table_rows("chat", "alice_chat", [{"User": "What's my name?"}],
                                          stream=False)
    assert response.rows[0].columns["AI"].text == "You haven't told me your name yet."


# -- section 12: Python columns ----------------------------------------------------------------

async def test_python_column_basic_concept_and_name_matching(jamai_table):
    table = jamai_table
    await table.create_table("action", "python_demo", [
        input_col("Input Column A"), input_col("Input Column B"),
        python_col("Python Column Name", '''
try:
    # Read from upstream columns
    value_a = row["Input Column A"]
    value_b = row["Input Column B"]

    # Do some processing
    result = f"{value_a} - processed with {value_b}"

    # Write to this column
    row["Python Column Name"] = result
except Exception as e:
    row["Python Column Name"] = f"ERROR: {str(e)}"
'''),
        input_col("declared"), input_col("extracted"),
        python_col("match", '''
from difflib import SequenceMatcher
try:
    a = row["declared"].upper()
    b = row["extracted"].upper()
    ratio = SequenceMatcher(None, a, b).ratio()
    row["match"] = f"{'MATCH' if ratio > 0.85 else 'MISMATCH'} ({ratio*100:.0f}%)"
except Exception as e:
    row["match"] = f"ERROR: {str(e)}"
'''),
        python_col("crash", 'row["crash"] = row["declared"] / 0'),
    ])
    response = await table.add_table_rows("action", "python_demo", [
        {"Input Column A": "alpha", "Input Column B": "beta", "declared": "John Smith",
         "extracted": "JOHN SMITH"},
        {"Input Column A": "x", "Input Column B": "y", "declared": "John Smith",
         "extracted": "Mary Jones"}], stream=False)
    first, second = response.rows
    assert first.columns["Python Column Name"].text == "alpha - processed with beta"
    assert first.columns["match"].text == "MATCH (100%)"
    assert second.columns["match"].text.startswith("MISMATCH (")
    assert first.columns["crash"].status == ERROR
    assert "TypeError" in first.columns["crash"].error


async def test_python_column_grayscale_image(jamai_table, channel, md):
    pytest.importorskip("PIL", reason="the seed's image example needs Pillow")
    from PIL import Image

    table = jamai_table
    await table.create_table("action", "images", [
        input_col("Input Image Column", "image"),
        python_col("processed_image", '''
from PIL import Image
import io

try:
    # 1. Access the input image bytes
    image_bytes = row["Input Image Column"]

    # 2. Open as PIL Image
    with Image.open(io.BytesIO(image_bytes)) as img:
        # 3. Process (example: convert to grayscale)
        img = img.convert("L")

        # 4. Save to bytes buffer
        output_buffer = io.BytesIO()
        img.save(output_buffer, format="PNG")

        # 5. Assign bytes to column
        row["processed_image"] = output_buffer.getvalue()
except Exception as e:
    row["processed_image"] = None
''', dtype="image"),
    ])
    uri = await upload(channel, md, "photo.png", png((20, 10)))
    response = await table.add_table_rows("action", "images", [{"Input Image Column": uri}],
                                          stream=False)
    cell = response.rows[0].columns["processed_image"]
    assert cell.status == DONE, cell.error
    content, content_type = await download(channel, md, cell.text)
    assert content_type == "image/png"
    with Image.open(io.BytesIO(content)) as img:
        assert img.mode == "L" and img.size == (20, 10)
    row = await table.get_table_row("action", "images", response.rows[0].row_id)
    assert get_value(row, "processed_image") == cell.text


async def test_python_column_half_volume_audio(jamai_table, channel, md):
    sf = pytest.importorskip("soundfile", reason="the seed's audio example needs soundfile")
    import numpy as np

    table = jamai_table
    await table.create_table("action", "sounds", [
        input_col("Input Audio Column", "audio"),
        python_col("processed_audio", '''
import soundfile as sf
import io

try:
    # 1. Read input audio bytes
    with io.BytesIO(row["Input Audio Column"]) as input_buffer:
        data, samplerate = sf.read(input_buffer)

    # 2. Process (example: reduce volume by half)
    data = data * 0.5

    # 3. Write to buffer
    output_buffer = io.BytesIO()
    sf.write(output_buffer, data, samplerate, format="WAV", subtype="PCM_16")

    # 4. Assign bytes to column
    row["processed_audio"] = output_buffer.getvalue()
except Exception as e:
    row["processed_audio"] = None
''', dtype="audio"),
    ])
    rate = 8000
    tone = 0.8 * np.sin(2 * np.pi * 440 * np.arange(rate // 4) / rate)
    wav = io.BytesIO()
    sf.write(wav, tone, rate, format="WAV", subtype="PCM_16")
    uri = await upload(channel, md, "tone.wav", wav.getvalue())
    response = await table.add_table_rows("action", "sounds", [{"Input Audio Column": uri}],
                                          stream=False)
    cell = response.rows[0].columns["processed_audio"]
    assert cell.status == DONE, cell.error
    content, _ = await download(channel, md, cell.text)
    data, samplerate = sf.read(io.BytesIO(content))
    assert samplerate == rate
    assert abs(np.abs(data).max() - 0.4) < 0.01


# -- sections 15, 16, 18 -----------------------------------------------------------------------

async def test_common_errors(jamai_table):
    table = jamai_table
    await fails(table.add_table_rows("action", "no_such_table", [{"input": "x"}], stream=False),
                grpc.StatusCode.NOT_FOUND)
    await table.create_table("action", "limits", [input_col("input")])
    await fails(table.add_table_rows("action", "limits", [{"input": "x"}] * 101, stream=False),
                grpc.StatusCode.INVALID_ARGUMENT)


async def test_parallel_processing_with_async(jamai_table):
    table = jamai_table
    await table.create_table("action", "parallel", [
        input_col("input"), llm_col("output", "Process: ${input}")])
    items = [{"input": f"item {i}"} for i in range(8)]
    results = await asyncio.gather(*(
        table.add_table_rows("action", "parallel", [item], stream=False) for item in items),
        return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results), results
    assert [f"item {i}" in r.rows[0].columns["output"].text for i, r in enumerate(results)] == \
        [True] * 8
    rows = await table.list_table_rows("action", "parallel")
    assert rows.total == 8


async def test_complete_example(jamai_table):
    table = jamai_table
    TABLE_ID = "qa_demo"

    # Delete if exists
    try:
        await table.delete_table("action", TABLE_ID)
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND

    await table.create_table("action", TABLE_ID, [
        input_col("question"),
        llm_col("answer", "Question: ${question}",
                system_prompt="You are a helpful assistant. Be concise.", max_tokens=100)])

    # 2. Add row (non-streaming)
    response = await table.add_table_rows("action", TABLE_ID, [{"question": "What is Python?"}],
                                          stream=False)
    row_id = response.rows[0].row_id
    answer = response.rows[0].columns["answer"].text
    assert row_id and "What is Python" in answer

    # 3. Read rows
    rows = await table.list_table_rows("action", TABLE_ID, limit=100)
    assert [(get_value(r, "question"), get_value(r, "answer")) for r in rows.items] == [
        ("What is Python?", answer)]
    assert rows.items[0].id == row_id

    # 4. Cleanup
    await table.delete_table("action", TABLE_ID)
    await fails(table.list_table_rows("action", TABLE_ID), grpc.StatusCode.NOT_FOUND)
