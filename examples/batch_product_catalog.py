"""The AjaxAI SDK's "Product Catalog Enhancement" example, as written; only the import changed.
(``gemini-1.5-flash-002`` must exist on the server; see README.md.)"""
# ruff: noqa: F401, I001, UP006, UP035

from rowforge.clients.batch import create_batch_job, AjaxAiRequestItem
from pydantic import BaseModel, Field
from typing import List, Optional


class ProductDetails(BaseModel):
    product_name: str
    short_description: str = Field(..., max_length=150)
    long_description: str
    features: List[str]
    category: str
    keywords: List[str]


product_data = [
    {"id": "P001", "raw_text": "Wireless earbuds, noise canceling, 24hr battery, Bluetooth 5.2, for gym/travel."},
    {"id": "P002", "raw_text": "Smartwatch with heart rate monitor, GPS, waterproof, compatible with iOS/Android."},
    {"id": "P003", "raw_text": "Ergonomic office chair, lumbar support, adjustable height, mesh back, black color."},
]

job = create_batch_job(api_key="your_api_key", model="gemini-1.5-flash-002", temperature=0.6)

for product in product_data:
    prompt = f"Generate product details including short description (max 150 chars), long description, features, category, and keywords for: {product['raw_text']}"
    request = AjaxAiRequestItem(request_id=product['id'], output_model=ProductDetails).add_text(prompt)
    job.add_request(request)

job.submit()

for result in job.get_results(output_model=ProductDetails):
    if result.response_model:
        details: ProductDetails = result.response_model
        print(f"--- Product Details for {result.request.request_id} ({details.product_name}) ---")
        print(f"Short Desc: {details.short_description}")
        print(f"Category: {details.category}")
        print(f"Features: {', '.join(details.features)}\n")
    else:
        print(f"Failed to enhance product {result.request.request_id}: {result.summary.status_message}")
