"""A tiny Django project for the in-process tests (settings configured on import)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        SECRET_KEY="tests-only",
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["kafka_asgi.django.KafkaMiddleware"],
        INSTALLED_APPS=[],
        USE_TZ=True,
        KAFKA_ASGI={"ACCESS_LOG": {"topic": "access"}},
    )
    django.setup()

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path


def item(request: Any, item_id: int) -> JsonResponse:
    request.kafka.log("item-views", {"item": item_id})
    return JsonResponse({"item": item_id})


async def async_item(request: Any, item_id: int) -> JsonResponse:
    request.kafka.log("item-views", {"item": item_id, "async": True})
    return JsonResponse({"item": item_id})


def stream(request: Any) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for i in range(4):
            time.sleep(0.01)
            yield b"y" * (i + 1)

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def astream(request: Any) -> StreamingHttpResponse:
    # Under ASGI Django wants an async iterator (it warns about sync ones).
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(4):
            await asyncio.sleep(0.01)
            yield b"y" * (i + 1)

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def echo(request: Any) -> HttpResponse:
    return HttpResponse(request.body)


def own_id(request: Any) -> HttpResponse:
    response = HttpResponse(b"ok")
    response["X-Request-ID"] = "view-made"
    return response


urlpatterns = [
    path("items/<int:item_id>", item),
    path("async-items/<int:item_id>", async_item),
    path("stream", stream),
    path("astream", astream),
    path("echo", echo),
    path("own-id", own_id),
]
