"""Models without tables, the JamAI SDK's "Available Models" and section 13: list models,
chat completions (whole and streamed), embeddings.

The seed's code as written; only the imports changed and types
annotated (``make lint`` runs ``mypy --strict`` on every example): the streamed call gets a
request of its own instead of the seed's ``request.stream = True``, so each result is typed.
"""
# ruff: noqa: I001

from rowforge.clients import RowForge as JamAI
import rowforge.clients.types as t

jamai = JamAI()

# List all chat models
chat_models = jamai.model_ids(capabilities=["chat"])
print(chat_models[:5])

# List embedding models
embed_models = jamai.model_ids(capabilities=["embed"])
print(embed_models)

# Get full model info
models = jamai.model_info()
for m in models.data[:3]:
    print(f"{m.id}: context={getattr(m, 'context_length', 'N/A')}")

messages = [
    t.ChatEntry.system("You are helpful."),
    t.ChatEntry.user("Hello"),
]
completion = jamai.generate_chat_completions(t.ChatRequest(
    model="openai/gpt-5.2",
    messages=messages,
    max_tokens=100,
    stream=False
))
print(completion.text)

# (The seed sets request.stream = True on the same request; a new one types the result.)
for chunk in jamai.generate_chat_completions(t.ChatRequest(
        model="openai/gpt-5.2", messages=messages, max_tokens=100, stream=True)):
    print(chunk.text, end="", flush=True)
print()

embeddings = jamai.generate_embeddings(
    t.EmbeddingRequest(
        model="ellm/BAAI/bge-m3",
        input=["Hello world"]
    )
)
print(len(embeddings.data[0].embedding))  # 1024
