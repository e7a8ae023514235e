"""The AjaxAI SDK's "Content Generation Pipeline" example, as written; only the import changed.
(``gemini-1.5-pro-002`` must exist on the server; see README.md.)"""
# ruff: noqa: I001, UP006, UP035

from rowforge.clients.batch import create_batch_job, AjaxAiRequestItem
from pydantic import BaseModel
from typing import List


class BlogPost(BaseModel):
    title: str
    sections: List[str]
    keywords: List[str]


job = create_batch_job(api_key="your_api_key", model="gemini-1.5-pro-002", temperature=0.7)

prompts = [
    "Generate a blog post about the benefits of cloud computing for small businesses.",
    "Create a detailed product description for a smart home security camera.",
    "Write a marketing email promoting a new line of eco-friendly cleaning products."
]

for i, prompt in enumerate(prompts):
    request = AjaxAiRequestItem(request_id=f"content_gen_{i+1}", output_model=BlogPost).add_text(prompt)
    job.add_request(request)

job.submit()

for result in job.get_results(output_model=BlogPost):
    if result.response_model:
        blog_post: BlogPost = result.response_model
        print(f"--- Generated Content for {result.request.request_id} ---")
        print(f"Title: {blog_post.title}")
        print("Sections:")
        for section in blog_post.sections:
            print(f"- {section}")
        print(f"Keywords: {', '.join(blog_post.keywords)}\n")
    else:
        print(f"Failed to generate content for {result.request.request_id}: {result.summary.status_message}")
