"""The AjaxAI SDK's "Customer Support Analysis" example, as written; only the import changed.
(``claude-3.5-sonnet-v2`` must exist on the server; see README.md.)"""
# ruff: noqa: I001

from rowforge.clients.batch import create_batch_job, AjaxAiRequestItem
from pydantic import BaseModel


class SupportTicketAnalysis(BaseModel):
    sentiment: str  # positive, negative, neutral
    topic: str
    urgency_score: int  # 1-5, 5 being most urgent
    recommended_action: str


support_tickets = [
    {"id": "T101", "text": "My internet is completely down! I can't work."},
    {"id": "T102", "text": "The new feature is great, but the UI is a bit clunky."},
    {"id": "T103", "text": "I have a question about my billing cycle next month."},
]

job = create_batch_job(api_key="your_api_key", model="claude-3.5-sonnet-v2", temperature=0.3)

for ticket in support_tickets:
    request_text = f"Analyze the following customer support ticket for sentiment, topic, urgency (1-5), and recommended action:\n{ticket['text']}"
    request = AjaxAiRequestItem(request_id=ticket['id'], output_model=SupportTicketAnalysis).add_text(request_text)
    job.add_request(request)

job.submit()

for result in job.get_results(output_model=SupportTicketAnalysis):
    if result.response_model:
        analysis: SupportTicketAnalysis = result.response_model
        print(f"--- Analysis for Ticket {result.request.request_id} ---")
        print(f"Sentiment: {analysis.sentiment}")
        print(f"Topic: {analysis.topic}")
        print(f"Urgency: {analysis.urgency_score}")
        print(f"Action: {analysis.recommended_action}\n")
    else:
        print(f"Failed to analyze ticket {result.request.request_id}: {result.summary.status_message}")
