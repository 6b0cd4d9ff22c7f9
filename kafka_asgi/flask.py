"""``kafka_asgi.flask``: the Flask extension (see kafka_asgi.integrations.flask).

::

    from kafka_asgi.flask import KafkaExtension
"""

from kafka_asgi.integrations.flask import KafkaExtension
from kafka_asgi.integrations.wsgi import AccessLogMiddleware, close_all

__all__ = ["AccessLogMiddleware", "KafkaExtension", "close_all"]
