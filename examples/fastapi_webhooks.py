"""Receive Fay webhooks in a FastAPI app.

Run it with ``FAY_WEBHOOK_SECRET=... uvicorn examples.fastapi_webhooks:app`` and register
``https://<your host>/webhooks/fay/`` in the Fay dashboard.
"""

from typing import Any

from fastapi import FastAPI, HTTPException

from fay_async.webhooks import WebhookEvent, WebhookReceiver

app = FastAPI()
results: dict[str, WebhookEvent] = {}  # request id -> its Output or Error event


async def on_fay_event(event: WebhookEvent) -> None:
    # Runs after Fay has its 200: slow work here never makes Fay wait or send it again.
    # Status events tell of progress; the dashboard's test event has no request id.
    if event.type in ("Output", "Error") and event.request_id is not None:
        results[event.request_id] = event


# Reads FAY_WEBHOOK_SECRET. Register the URL with its trailing slash: FastAPI, like
# Starlette, answers the bare path of a mount with a redirect.
app.mount("/webhooks/fay", WebhookReceiver(on_event=on_fay_event))


@app.get("/results/{request_id}")
async def result(request_id: str) -> dict[str, Any]:
    event = results.get(request_id)
    if event is None:
        raise HTTPException(404, "no result for this research yet")
    return {
        "request_id": request_id,
        "status": str(event.status),
        "output": event.output,
        "error_message": event.error_message,
    }
