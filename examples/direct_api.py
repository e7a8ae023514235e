"""Models without tables, the JamAI SDK's "Available Models" and section 13: list models,
chat completions (whole and streamed), embeddings.

The seed's code as written; only the imports changed.
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

request = t.ChatRequest(
    model="openai/gpt-5.2",
    messages=[
        t.ChatEntry.system("You are helpful."),
        t.ChatEntry.user("Hello"),
    ],
    max_tokens=100,
    stream=False
)
completion = jamai.generate_chat_completions(request)
print(completion.text)

request.stream = True
for chunk in jamai.generate_chat_completions(request):
    print(chunk.text, end="", flush=True)
print()

embeddings = jamai.generate_embeddings(
    t.EmbeddingRequest(
        model="ellm/BAAI/bge-m3",
        input=["Hello world"]
    )
)
print(len(embeddings.data[0].embedding))  # 1024
