"""The async client, the JamAI SDK's section 16: list tables, add a row, process items in
parallel with ``asyncio.gather``.

The seed's code as written; only the imports changed (``JamAIAsync`` is
``rowforge.clients.AsyncRowForge``) and types annotated (``make lint`` runs ``mypy --strict``
on every example), plus the table the seed assumes exists.
"""
# ruff: noqa: I001

import asyncio
from rowforge.clients import JamAIAsync
import rowforge.clients.types as t
from typing import Any


async def process_batch(jamai: JamAIAsync, table_id: str, items: list[dict[str, Any]]
                        ) -> list[t.MultiRowCompletionResponse | BaseException]:
    """Process multiple items in parallel."""
    tasks = []
    for item in items:
        task = jamai.table.add_table_rows(
            'action',
            t.MultiRowAddRequest(
                table_id=table_id,
                data=[item],
                stream=False
            )
        )
        tasks.append(task)

    results = await asyncio.gather(*tasks, return_exceptions=True)
    return results


async def main() -> None:
    jamai = JamAIAsync(token="...", project_id="...")

    await jamai.table.delete_table('action', 'my_table', missing_ok=True)
    await jamai.table.create_action_table(t.ActionTableSchemaCreate(id="my_table", cols=[
        t.ColumnSchemaCreate(id="input", dtype="str"),
        t.ColumnSchemaCreate(id="output", dtype="str", gen_config=t.LLMGenConfig(
            model="openai/gpt-5.2", prompt="Reply to: ${input}", max_tokens=50)),
    ]))

    # Async list tables
    tables = await jamai.table.list_tables('action')
    print([table.id for table in tables.items])

    # Async add row
    response = await jamai.table.add_table_rows(
        'action',
        t.MultiRowAddRequest(
            table_id="my_table",
            data=[{"input": "Hello"}],
            stream=False
        )
    )
    print(response.rows[0].columns["output"].text)

    results = await process_batch(jamai, "my_table", [{"input": f"item {i}"} for i in range(5)])
    print(sum(not isinstance(r, Exception) for r in results), "rows added in parallel")

    # Streaming with the async client.
    async for chunk in await jamai.table.add_table_rows('action', t.MultiRowAddRequest(
            table_id="my_table", data=[{"input": "stream me"}], stream=True)):
        if chunk.output_column_name == "output":
            print(chunk.text, end="", flush=True)
    print()

    await jamai.table.delete_table('action', 'my_table')
    await jamai.close()

asyncio.run(main())
