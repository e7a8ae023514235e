"""Chat tables, the JamAI SDK's section 10: create a chatbot table, stream a turn, let the
table keep the history, read the conversation back.

The seed's code as written; only the imports changed and types
annotated (``make lint`` runs ``mypy --strict`` on every example).
"""
# ruff: noqa: I001

from rowforge.clients import RowForge as JamAI
import rowforge.clients.types as t
from typing import Any

jamai = JamAI()


def get_value(field: Any) -> Any:
    if isinstance(field, dict) and 'value' in field:
        return field['value']
    return field


try:
    jamai.table.delete_table('chat', 'my_chatbot')
except Exception:
    pass

table = jamai.table.create_chat_table(
    t.ChatTableSchemaCreate(
        id="my_chatbot",
        cols=[
            t.ColumnSchemaCreate(id="User", dtype="str"),
            t.ColumnSchemaCreate(
                id="AI",
                dtype="str",
                gen_config=t.LLMGenConfig(
                    model="openai/gpt-5.2",
                    system_prompt="You are helpful.",
                    max_tokens=500
                )
            )
        ]
    )
)

completion = jamai.table.add_table_rows(
    'chat',
    t.MultiRowAddRequest(
        table_id="my_chatbot",
        data=[{"User": "Hello!"}],
        stream=True
    )
)

for chunk in completion:
    if chunk.output_column_name == "AI":
        print(chunk.text, end="", flush=True)
print()

# Turn 1
jamai.table.add_table_rows('chat', t.MultiRowAddRequest(
    table_id="my_chatbot",
    data=[{"User": "My name is Alice"}],
    stream=False
))

# Turn 2 - AI remembers the name from Turn 1
jamai.table.add_table_rows('chat', t.MultiRowAddRequest(
    table_id="my_chatbot",
    data=[{"User": "What's my name?"}],
    stream=False
))

# View conversation history (get_value defined in Quick Reference)
rows = jamai.table.list_table_rows('chat', 'my_chatbot', limit=100)
for row in rows.items:
    print(f"User: {get_value(row.get('User'))}")
    print(f"AI: {get_value(row.get('AI'))}\n")

jamai.table.delete_table('chat', 'my_chatbot')
