"""The error-code table against independent sources (kafka-python and aiokafka)."""

from __future__ import annotations

import inspect
import pickle
from types import ModuleType

import pytest

from kafka_asgi.protocol import errors
from kafka_asgi.protocol.errors import (
    BrokerResponseError,
    KafkaError,
    error_for_code,
    raise_for_code,
)

# Names that kafka-python / aiokafka still spell as older Kafka releases did (or as their
# own aliases); Kafka 4.x's Errors enum spells them as on the right.
OLDER_SPELLINGS = {
    -1: {"UNKNOWN"},
    6: {"NOT_LEADER_FOR_PARTITION"},  # renamed by KIP-392
    10: {"MESSAGE_SIZE_TOO_LARGE"},
    13: {"STALE_LEADER_EPOCH_CODE"},  # aiokafka's name for 13
    17: {"INVALID_TOPIC"},
    39: {"INVALID_REPLICATION_ASSIGNMENT"},
}


def _error_table(module: ModuleType) -> dict[int, set[str]]:
    base = module.BrokerResponseError
    table: dict[int, set[str]] = {}
    for _name, cls in inspect.getmembers(module, inspect.isclass):
        errno = getattr(cls, "errno", None)
        if issubclass(cls, base) and isinstance(errno, int) and errno != 0:
            table.setdefault(errno, set()).add(cls.message)
    return table


@pytest.mark.parametrize("module_name", ["kafka.errors", "aiokafka.errors"])
def test_names_match_independent_tables(module_name: str) -> None:
    module = pytest.importorskip(module_name)
    theirs = _error_table(module)
    assert len(theirs) > 70  # the comparison below must cover a real table
    compared = 0
    for code, names in sorted(theirs.items()):
        ours = error_for_code(code)
        if ours.name.startswith("UNKNOWN_ERROR_CODE_"):
            continue  # a code they know and Kafka 4.1 does not: nothing to compare
        accepted = {ours.name} | OLDER_SPELLINGS.get(code, set())
        assert names & accepted, (code, names, ours.name)
        compared += 1
    assert compared == len(theirs)


@pytest.mark.parametrize(
    ("code", "name", "cls", "retriable", "invalid_metadata"),
    [
        (-1, "UNKNOWN_SERVER_ERROR", errors.UnknownServerError, False, False),
        (1, "OFFSET_OUT_OF_RANGE", errors.OffsetOutOfRangeError, False, False),
        (3, "UNKNOWN_TOPIC_OR_PARTITION", errors.UnknownTopicOrPartitionError, True, True),
        (5, "LEADER_NOT_AVAILABLE", errors.LeaderNotAvailableError, True, True),
        (6, "NOT_LEADER_OR_FOLLOWER", errors.NotLeaderOrFollowerError, True, True),
        (7, "REQUEST_TIMED_OUT", errors.RequestTimedOutError, True, False),
        (10, "MESSAGE_TOO_LARGE", errors.MessageTooLargeError, False, False),
        (15, "COORDINATOR_NOT_AVAILABLE", errors.CoordinatorNotAvailableError, True, False),
        (19, "NOT_ENOUGH_REPLICAS", errors.NotEnoughReplicasError, True, False),
        (29, "TOPIC_AUTHORIZATION_FAILED", errors.TopicAuthorizationFailedError, False, False),
        (35, "UNSUPPORTED_VERSION", errors.UnsupportedVersionError, False, False),
        (36, "TOPIC_ALREADY_EXISTS", errors.TopicAlreadyExistsError, False, False),
        (45, "OUT_OF_ORDER_SEQUENCE_NUMBER", errors.OutOfOrderSequenceNumberError, False, False),
        (56, "KAFKA_STORAGE_ERROR", errors.KafkaStorageError, True, True),
        (58, "SASL_AUTHENTICATION_FAILED", errors.SaslAuthenticationFailedError, False, False),
        (74, "FENCED_LEADER_EPOCH", errors.FencedLeaderEpochError, True, True),
        (90, "PRODUCER_FENCED", errors.ProducerFencedError, False, False),
        (100, "UNKNOWN_TOPIC_ID", errors.UnknownTopicIdError, True, True),
        (133, "SHARE_SESSION_LIMIT_REACHED", errors.ShareSessionLimitReachedError, True, False),
    ],
)
def test_well_known_codes(
    code: int, name: str, cls: type[BrokerResponseError], retriable: bool, invalid_metadata: bool
) -> None:
    assert error_for_code(code) is cls
    assert cls.code == code
    assert cls.name == name
    assert cls.retriable is retriable
    assert cls.invalid_metadata is invalid_metadata
    assert issubclass(cls, BrokerResponseError)
    assert issubclass(cls, KafkaError)


def test_every_code_from_minus_one_to_133_has_a_class() -> None:
    seen_names = set()
    for code in [-1, *range(1, 134)]:
        cls = error_for_code(code)
        assert cls.code == code
        assert not cls.name.startswith("UNKNOWN_ERROR_CODE_"), code
        seen_names.add(cls.name)
        assert cls.__name__ in errors.__all__
    assert len(seen_names) == 134


def test_invalid_metadata_implies_retriable() -> None:
    # Kafka's InvalidMetadataException extends RetriableException.
    for code in [-1, *range(1, 134)]:
        cls = error_for_code(code)
        if cls.invalid_metadata:
            assert cls.retriable, cls.name


def test_raise_for_code() -> None:
    raise_for_code(0)
    raise_for_code(0, "ignored")
    with pytest.raises(errors.NotLeaderOrFollowerError) as info:
        raise_for_code(6, "partition moved")
    assert info.value.code == 6
    assert info.value.message == "partition moved"
    assert "NOT_LEADER_OR_FOLLOWER" in str(info.value)
    assert "partition moved" in str(info.value)
    with pytest.raises(errors.TopicAlreadyExistsError):
        raise_for_code(36)


def test_unknown_code_keeps_its_number() -> None:
    cls = error_for_code(9999)
    assert cls.code == 9999
    assert issubclass(cls, errors.UnknownServerError)
    assert error_for_code(9999) is cls
    with pytest.raises(errors.UnknownServerError) as info:
        raise_for_code(9999)
    assert info.value.code == 9999
    assert "9999" in str(info.value)


def test_code_zero_is_not_an_error() -> None:
    with pytest.raises(ValueError, match="0"):
        error_for_code(0)


def test_errors_pickle() -> None:
    err = errors.LeaderNotAvailableError("election")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is errors.LeaderNotAvailableError
    assert copy.message == "election"
