"""kafka_asgi.cluster: the cluster view (KafkaClient), metadata cache, pool, admin calls."""

from kafka_asgi.cluster.client import ClientStats, KafkaClient
from kafka_asgi.cluster.metadata import (
    BrokerMetadata,
    ClusterMetadata,
    PartitionMetadata,
    TopicMetadata,
)
from kafka_asgi.cluster.options import (
    CLIENT_OPTION_NAMES,
    ClientOptions,
    parse_bootstrap,
    split_client_options,
)

__all__ = [
    "CLIENT_OPTION_NAMES",
    "BrokerMetadata",
    "ClientOptions",
    "ClientStats",
    "ClusterMetadata",
    "KafkaClient",
    "PartitionMetadata",
    "TopicMetadata",
    "parse_bootstrap",
    "split_client_options",
]
