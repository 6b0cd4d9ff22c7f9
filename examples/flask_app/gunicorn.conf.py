"""gunicorn settings for the Flask example (``gunicorn app:app -c gunicorn.conf.py``).

No hook is needed for kafka_asgi: each worker starts its producer on its first request
(after the fork) and flushes it at exit through ``atexit``, which a graceful stop
(SIGTERM to the master) runs in every worker. ``graceful_timeout`` must leave room for
that flush (``KAFKA_ASGI_SHUTDOWN_TIMEOUT``, 10 s by default).
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")  # or "gthread"
# gthread only: gunicorn turns a sync worker with threads > 1 into a gthread one.
threads = int(os.environ.get("GUNICORN_THREADS", "4")) if worker_class == "gthread" else 1
graceful_timeout = 30
accesslog = None  # the access log goes to Kafka
