"""Action tables, the JamAI SDK's sections 3 to 8 and 15 in one program: create a table with
input, file, LLM and Python columns; add rows (waiting and streaming, with a file); read them
(filters, columns, full-text search, pagination, one row); update, delete; table operations.

The seed's code is kept as written; only the imports changed and types
annotated (``make lint`` runs ``mypy --strict`` on every example), and the placeholder path
"/path/to/image.png" is a real small PNG written to a temporary directory.
"""
# ruff: noqa: I001, F402

from rowforge.clients import RowForge as JamAI
import rowforge.clients.types as t
from typing import Any
from collections.abc import Callable

import base64
import os
import tempfile

jamai = JamAI()

# CRITICAL: Values are wrapped - ALWAYS extract
def get_value(field: Any) -> Any:
    if isinstance(field, dict) and 'value' in field:
        return field['value']
    return field


# -- 8. Check if table exists / safe table creation ------------------------------------------
def table_exists(jamai: JamAI, table_type: str, table_id: str) -> bool:
    """Check if a table exists before creating/using it."""
    try:
        jamai.table.get_table(table_type, table_id)
        return True
    except Exception:
        return False


def ensure_table(jamai: JamAI, table_type: str, table_id: str,
                 create_func: Callable[[], t.TableMetaResponse]) -> t.TableMetaResponse:
    """Delete existing table and create fresh."""
    try:
        jamai.table.delete_table(table_type, table_id)
    except Exception:
        pass  # Table didn't exist
    return create_func()


# -- 3. Create -----------------------------------------------------------------------------------
table = ensure_table(jamai, 'action', 'my_table', lambda:
    jamai.table.create_action_table(
        t.ActionTableSchemaCreate(
            id="my_table",
            cols=[
                # Input column
                t.ColumnSchemaCreate(id="input", dtype="str"),

                # File input
                t.ColumnSchemaCreate(id="image", dtype="file"),

                # LLM output column
                t.ColumnSchemaCreate(
                    id="output",
                    dtype="str",
                    gen_config=t.LLMGenConfig(
                        model="openai/gpt-5.2",
                        system_prompt="You are helpful.",
                        prompt="Process: ${input}\nImage: ${image}",
                        temperature=0.7,
                        max_tokens=500
                    )
                ),

                # Python computed column
                t.ColumnSchemaCreate(
                    id="word_count",
                    dtype="str",
                    gen_config=t.PythonGenConfig(
                        python_code='row["word_count"] = str(len(row["output"].split()))'
                    )
                )
            ]
        )
    )
)
print("exists:", table_exists(jamai, 'action', 'my_table'))

# -- 4. Add rows: non-streaming --------------------------------------------------------------
response = jamai.table.add_table_rows(
    'action',
    t.MultiRowAddRequest(
        table_id="my_table",
        data=[
            {"input": "Hello world"},
            {"input": "Goodbye world"}
        ],
        stream=False
    )
)

# Get LLM output
print(response.rows[0].columns["output"].text)

# -- 4. Add rows: streaming ------------------------------------------------------------------
completion = jamai.table.add_table_rows(
    'action',
    t.MultiRowAddRequest(
        table_id="my_table",
        data=[{"input": "Hello"}],
        stream=True
    )
)

for chunk in completion:
    if chunk.output_column_name == "output":
        print(chunk.text, end="", flush=True)
print()

# -- 4. With file upload ---------------------------------------------------------------------
image_path = os.path.join(tempfile.mkdtemp(), "image.png")
with open(image_path, "wb") as fh:  # a 1x1 PNG stands for the seed's /path/to/image.png
    fh.write(base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="))

# Upload file first
file_response = jamai.file.upload_file(image_path)

# Use URI in row
jamai.table.add_table_rows(
    'action',
    t.MultiRowAddRequest(
        table_id="my_table",
        data=[{"image": file_response.uri, "input": "Describe this"}],
        stream=False
    )
)

# -- 4. Get row ID after adding (non-streaming) ----------------------------------------------
response = jamai.table.add_table_rows(
    'action',
    t.MultiRowAddRequest(
        table_id="my_table",
        data=[{"input": "Hello"}],
        stream=False
    )
)

# Get the row ID for later updates/deletes
row_id = response.rows[0].row_id
print(f"Created row: {row_id}")

# Get LLM output
output = response.rows[0].columns["output"].text

# -- 4. Get row ID after adding (streaming) --------------------------------------------------
completion = jamai.table.add_table_rows(
    'action',
    t.MultiRowAddRequest(
        table_id="my_table",
        data=[{"input": "Hello"}],
        stream=True
    )
)

row_id = ""
for chunk in completion:
    if hasattr(chunk, 'row_id') and chunk.row_id:
        row_id = chunk.row_id
    if chunk.output_column_name == "output" and hasattr(chunk, 'text'):
        print(chunk.text, end="", flush=True)

print(f"\nRow ID: {row_id}")

# -- 5. Read rows --------------------------------------------------------------------------------
rows = jamai.table.list_table_rows(
    'action',
    'my_table',
    offset=0,
    limit=100  # MAX IS 100!
)

for row in rows.items:
    # IMPORTANT: Extract value from wrapper
    value = row['input']['value']  # or use get_value()
    print("input:", value)

# Syntax: "column" (double quotes) = 'value' (single quotes)
rows = jamai.table.list_table_rows(
    'action', 'my_table',
    where='"input" = \'Hello\''
)
print("where:", rows.total)

# LIKE pattern
rows = jamai.table.list_table_rows('action', 'my_table', where='"input" LIKE \'%world%\'')
print("like:", rows.total)

rows = jamai.table.list_table_rows(
    'action', 'my_table',
    columns=['input', 'output']  # ID, Updated at always included
)
print("columns:", sorted(rows.items[0]))

rows = jamai.table.list_table_rows(
    'action', 'my_table',
    search_query="Goodbye"
)
print("search:", [get_value(r['input']) for r in rows.items])


def get_all_rows(table_id: str, table_type: str = 'action') -> list[dict[str, Any]]:
    all_rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = jamai.table.list_table_rows(table_type, table_id, offset=offset, limit=100)
        all_rows.extend(response.items)
        if len(response.items) < 100:
            break
        offset += 100
    return all_rows


print("all rows:", len(get_all_rows("my_table")))

row = jamai.table.get_table_row('action', 'my_table', row_id)
print("row:", get_value(row['input']))

# -- 6. Update rows ------------------------------------------------------------------------------
jamai.table.update_table_rows(
    'action',
    t.MultiRowUpdateRequest(
        table_id="my_table",
        data={
            row_id: {"input": "new_value"},
        }
    )
)
print("updated:", get_value(jamai.table.get_table_row('action', 'my_table', row_id)['input']))

# -- 7. Delete rows ------------------------------------------------------------------------------
jamai.table.delete_table_rows(
    'action',
    t.MultiRowDeleteRequest(
        table_id="my_table",
        row_ids=[row_id]
    )
)
print("left:", jamai.table.list_table_rows('action', 'my_table').total)

# -- 8. Table operations -------------------------------------------------------------------------
table = jamai.table.get_table('action', 'my_table')
for col in table.cols:
    print(f"{col.id}: {col.dtype}")

# With data
new_table = jamai.table.duplicate_table('action', 'my_table', 'copy')

# Schema only
try:
    jamai.table.delete_table('action', 'copy2')
except Exception:
    pass
new_table = jamai.table.duplicate_table('action', 'my_table', 'copy2', include_data=False)

tables = jamai.table.list_tables('action', count_rows=True)
for table in tables.items:
    print(f"{table.id}: {table.num_rows} rows")

for table_id in ("copy", "copy2", "my_table"):
    jamai.table.delete_table('action', table_id)
print("done")
