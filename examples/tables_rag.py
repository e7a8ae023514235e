"""Knowledge tables and RAG, the JamAI SDK's section 9: create a knowledge table, add rows,
embed a file, then answer questions from it with a RAG column; plus a direct hybrid search.

The seed's code as written; only the imports changed and types
annotated (``make lint`` runs ``mypy --strict`` on every example), and the placeholder path
"/path/to/doc.txt" is a real text file written to a temporary directory. Tables are made with
the seed's "Safe Table Creation (Delete if Exists)" helper, knowledge table first, and left in
place: running the program again deletes the knowledge table while the RAG table still uses
it, then creates both afresh.
"""
# ruff: noqa: I001

from rowforge.clients import RowForge as JamAI
import rowforge.clients.types as t
from collections.abc import Callable

import os
import tempfile

jamai = JamAI()


def ensure_table(jamai: JamAI, table_type: str, table_id: str,
                 create_func: Callable[[], t.TableMetaResponse]) -> t.TableMetaResponse:
    """Delete existing table and create fresh."""
    try:
        jamai.table.delete_table(table_type, table_id)
    except Exception:
        pass  # Table didn't exist
    return create_func()


table = ensure_table(jamai, 'knowledge', 'my_kb', lambda:
    jamai.table.create_knowledge_table(
        t.KnowledgeTableSchemaCreate(
            id="my_kb",
            cols=[],  # Title, Text auto-created
            embedding_model="ellm/BAAI/bge-m3"
        )
    )
)

jamai.table.add_table_rows(
    'knowledge',
    t.MultiRowAddRequest(
        table_id="my_kb",
        data=[{"Title": "Doc1", "Text": "Content here..."}],
        stream=False
    )
)

doc_path = os.path.join(tempfile.mkdtemp(), "doc.txt")
with open(doc_path, "w") as fh:  # stands for the seed's /path/to/doc.txt
    fh.write("Rowforge Handbook\n\nThe rowforge server listens on port 50051 by default. "
             "Knowledge tables hold documents split into chunks; each chunk is embedded and "
             "indexed for full-text search.\n\nRAG columns retrieve the best chunks and give "
             "them to the model as references.\n")

response = jamai.table.embed_file(doc_path, "my_kb")
print(f"Embedded {response.row_count} chunks")

table = ensure_table(jamai, 'action', 'rag_qa', lambda:
    jamai.table.create_action_table(
        t.ActionTableSchemaCreate(
            id="rag_qa",
            cols=[
                t.ColumnSchemaCreate(id="question", dtype="str"),
                t.ColumnSchemaCreate(
                    id="answer",
                    dtype="str",
                    gen_config=t.LLMGenConfig(
                        model="openai/gpt-5.2",
                        prompt="${question}",
                        rag_params=t.RAGParams(
                            table_id="my_kb",  # Link to Knowledge Table
                            k=3                 # Top k chunks
                        ),
                        max_tokens=200
                    )
                )
            ]
        )
    )
)

rag_response = jamai.table.add_table_rows('action', t.MultiRowAddRequest(
    table_id="rag_qa", data=[{"question": "Which port does the server listen on?"}],
    stream=False))
answer = rag_response.rows[0].columns["answer"]
print("Answer:", answer.text)
print("References:", [c.title for c in answer.references.chunks] if answer.references else [])
print("Search query:", answer.references.search_query if answer.references else "")

hits = jamai.table.hybrid_search("my_kb", "default port", k=2)
for hit in hits:
    print(f"{hit.score:.4f} {hit['Title']['value']}: {hit['Text']['value'][:60]}")

print("Rows in my_kb:", jamai.table.get_table('knowledge', 'my_kb').num_rows)
