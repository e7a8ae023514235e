"""Structured output, the AjaxAI SDK's "Structured Outputs" section: Pydantic models sent as
JSON schemas, results parsed back into them (a flat model and a nested one).

The seed's code as written; only the imports changed.
"""
# ruff: noqa: I001, UP006, UP035, UP045

from rowforge.clients.batch import create_batch_job, AjaxAiRequestItem
from pydantic import BaseModel
from typing import List, Optional


class ProductDescription(BaseModel):
    title: str
    description: str
    features: List[str]
    price_range: str


job = create_batch_job(api_key="your_api_key")

request = AjaxAiRequestItem(
    request_id="product_1",
    output_model=ProductDescription
).add_text("Generate a product description for wireless headphones")

job.add_request(request)
job.submit()

# Get typed responses
for result in job.get_results(output_model=ProductDescription):
    product: ProductDescription = result.response
    print(f"Title: {product.title}")
    print(f"Features: {', '.join(product.features)}")


class ContactInfo(BaseModel):
    email: str
    phone: Optional[str] = None


class LeadAnalysis(BaseModel):
    score: int  # 1-100
    contact: ContactInfo
    interests: List[str]
    next_action: str


job = create_batch_job(api_key="your_api_key")
request = AjaxAiRequestItem(
    request_id="lead_1",
    output_model=LeadAnalysis
).add_text("Analyze this lead: John Doe, loves tech gadgets...")
job.add_request(request)
job.submit()

for result in job.get_results(output_model=LeadAnalysis):
    lead: LeadAnalysis = result.response
    print(f"Lead score: {lead.score}, contact: {lead.contact.email}, next: {lead.next_action}")
