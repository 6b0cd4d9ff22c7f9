"""Views: request.kafka.log() stamps the request id and route on each event."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

ITEMS = {i: {"id": i, "name": f"item {i}", "price": 100 + i} for i in range(1, 101)}


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def get_item(request: HttpRequest, item_id: int) -> JsonResponse:
    if item_id not in ITEMS:
        return JsonResponse({"detail": "no such item"}, status=404)
    return JsonResponse(ITEMS[item_id])


@csrf_exempt
async def create_order(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse(status=405)
    order = json.loads(request.body)
    item = ITEMS.get(order.get("item_id"))
    if item is None:
        return JsonResponse({"detail": "no such item"}, status=404)
    total = item["price"] * order.get("quantity", 1)
    kafka = request.kafka  # type: ignore[attr-defined]
    kafka.log(settings.EVENTS_TOPIC, {"event": "order_created", **order, "total": total})
    return JsonResponse({"ok": True, "total": total, "request_id": kafka.request_id}, status=201)


def export(request: HttpRequest) -> StreamingHttpResponse:
    # The body's iterator matches the server: async under ASGI, sync under WSGI
    # (Django warns, and buffers, when they do not match).
    def sync_rows() -> Iterator[bytes]:
        yield b"id,name,price\n"
        for item in ITEMS.values():
            yield f"{item['id']},{item['name']},{item['price']}\n".encode()

    async def async_rows() -> AsyncIterator[bytes]:
        for row in sync_rows():
            yield row
            await asyncio.sleep(0)

    if isinstance(request, ASGIRequest):
        return StreamingHttpResponse(async_rows(), content_type="text/csv")
    return StreamingHttpResponse(sync_rows(), content_type="text/csv")
