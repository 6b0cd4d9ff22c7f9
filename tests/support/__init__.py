"""Helpers shared by the tests (pytest fixtures stay in conftest.py files).

- ``brokers``: the test broker's addresses (``KafkaCluster``), the local harness
  (``kafka_local``), brokers a test module starts for itself, ``unique_name``;
- ``ports``: ``free_port``, ``free_base_port``;
- ``timing``: ``scaled`` (timing tolerances, scaled by KAFKA_ASGI_TEST_TIME_SCALE)
  and the one polling helper, ``eventually`` (async) / ``eventually_sync``;
- ``listeners``: client options for each listener of the test broker;
- ``fake_peer``: a scripted TCP peer for what a real broker never does;
- ``fake_client``: an in-memory KafkaClient for the producer's logic;
- ``producers``: a producer over the fake client, and a collector of its reports;
- ``asgi``: drive an ASGI app's lifespan and websockets as a server would;
- ``servers``: the example apps under real uvicorn processes;
- ``messages``: strategies and examples for the generated protocol messages;
- ``readers``: read a topic back with confluent-kafka;
- ``cluster``: the three-broker cluster of the ``kafka_cluster`` fixture;
- ``observability``: a fake producer and middleware for the observability hooks, and
  the OpenTelemetry SDK's in-memory exporters (``Otel``);
- ``oauth``: the test identity provider, and ``make_jwt`` (an unsigned JWT);
- ``wsgi``: a buffered WSGI test client, a plain WSGI app, a Flask app for the extension.

Tests import helpers from here, never from conftest or from another test module
(tests/test_imports.py checks that).
"""
