"""``kafka_asgi.wsgi``: the access-log middleware for any WSGI app (gunicorn, uWSGI...).

::

    from kafka_asgi.wsgi import AccessLogMiddleware

    application = AccessLogMiddleware(application, topic="access-log", bootstrap="host:9092")
"""

from kafka_asgi.integrations.wsgi import AccessLogMiddleware, background_producer, close_all

__all__ = ["AccessLogMiddleware", "background_producer", "close_all"]
