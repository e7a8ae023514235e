"""The AjaxAI SDK's quick start: one request, submit, stream the results.

From the seed verbatim; only the import line changed (``ajaxai`` -> ``rowforge.clients.batch``).
The key is the rowforge token (``ROWFORGE_TOKEN``; ignored when the server runs without auth);
the server's default chat model answers.
"""
# ruff: noqa: I001

from rowforge.clients.batch import create_batch_job, AjaxAiRequestItem
# Create job and add requests
job = create_batch_job(api_key="your_api_key")
request = AjaxAiRequestItem(request_id="req_1").add_text("Hello world")
job.add_request(request)
# Submit and get results
job.submit()
for result in job.get_results(output_model=None):
    print(result.response.text)
