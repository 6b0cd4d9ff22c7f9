"""Each listener of the test broker answers a real client (confluent-kafka, independent of ours)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.support.brokers import KafkaCluster
from tests.support.listeners import LISTENER_CASES


def _settings(kafka: KafkaCluster, listener: str, mechanism: str | None = None) -> dict[str, Any]:
    kafka.require(listener)
    conf: dict[str, Any] = {"bootstrap.servers": getattr(kafka, listener)}
    if listener in ("ssl", "sasl_ssl", "mtls"):
        conf["ssl.ca.location"] = kafka.ca_file
        conf["ssl.endpoint.identification.algorithm"] = "https"
    if listener == "ssl":
        conf["security.protocol"] = "SSL"
    if listener == "mtls":
        conf["security.protocol"] = "SSL"
        conf["ssl.certificate.location"] = kafka.client_cert
        conf["ssl.key.location"] = kafka.client_key
    if listener.startswith("sasl"):
        conf["security.protocol"] = "SASL_SSL" if listener == "sasl_ssl" else "SASL_PLAINTEXT"
        conf["sasl.mechanism"] = mechanism
        conf["sasl.username"] = kafka.username
        conf["sasl.password"] = kafka.password
    return conf


@pytest.mark.parametrize(("listener", "mechanism"), LISTENER_CASES)
def test_listener_round_trip(
    kafka: KafkaCluster, new_topic: Callable[..., str], listener: str, mechanism: str | None
) -> None:
    conf = _settings(kafka, listener, mechanism)
    topic = new_topic()
    metadata = AdminClient(conf).list_topics(timeout=20)
    assert topic in metadata.topics
    assert [b.port for b in metadata.brokers.values()] == [
        int(getattr(kafka, listener).split(":")[1])
    ]

    producer = Producer(conf)
    delivered: list[Any] = []
    producer.produce(
        topic, value=f"hello {listener}".encode(), on_delivery=lambda e, m: delivered.append((e, m))
    )
    assert producer.flush(20) == 0
    assert len(delivered) == 1 and delivered[0][0] is None

    consumer = Consumer({**conf, "group.id": f"g-{topic}", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        msg = consumer.poll(20)
        assert msg is not None and msg.error() is None
        assert msg.value() == f"hello {listener}".encode()
    finally:
        consumer.close()
