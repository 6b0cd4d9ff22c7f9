"""The exception tree of kafka_asgi and one class per Kafka error code.

The roots live in :mod:`.exceptions`, the per-code classes in :mod:`.error_codes`;
this module is the one import path for all of them, and maps codes to classes.

Everything the library raises derives from :class:`KafkaError`. Error codes returned by
brokers map to subclasses of :class:`BrokerResponseError`, named after Kafka's own
``Errors`` enum (``NOT_LEADER_OR_FOLLOWER`` -> :class:`NotLeaderOrFollowerError`).

The ``retriable`` and ``invalid_metadata`` flags follow the Java client: an error is
retriable when Kafka's exception class extends ``RetriableException``, and marks the
client's metadata as stale when it extends ``InvalidMetadataException`` (the producer
refreshes metadata before retrying those). The table below was taken from the classes
of kafka-clients 4.1.1 (codes -1 to 133).
"""

# __all__ names the error-code classes that the star import below brings in:
# ruff: noqa: F405
from __future__ import annotations

from typing import NoReturn

from kafka_asgi.protocol.error_codes import *  # noqa: F403 - every error-code class
from kafka_asgi.protocol.error_codes import BY_CODE, UnknownServerError
from kafka_asgi.protocol.exceptions import (
    BrokerResponseError,
    EncodeError,
    KafkaError,
    ProtocolError,
    UnsupportedCodecError,
)

__all__ = [
    "NO_ERROR",
    "BrokerIdNotRegisteredError",
    "BrokerNotAvailableError",
    "BrokerResponseError",
    "ClusterAuthorizationFailedError",
    "ConcurrentTransactionsError",
    "CoordinatorLoadInProgressError",
    "CoordinatorNotAvailableError",
    "CorruptMessageError",
    "DelegationTokenAuthDisabledError",
    "DelegationTokenAuthorizationFailedError",
    "DelegationTokenExpiredError",
    "DelegationTokenNotFoundError",
    "DelegationTokenOwnerMismatchError",
    "DelegationTokenRequestNotAllowedError",
    "DuplicateBrokerRegistrationError",
    "DuplicateResourceError",
    "DuplicateSequenceNumberError",
    "DuplicateVoterError",
    "ElectionNotNeededError",
    "EligibleLeadersNotAvailableError",
    "EncodeError",
    "FeatureUpdateFailedError",
    "FencedInstanceIdError",
    "FencedLeaderEpochError",
    "FencedMemberEpochError",
    "FencedStateEpochError",
    "FetchSessionIdNotFoundError",
    "FetchSessionTopicIdError",
    "GroupAuthorizationFailedError",
    "GroupIdNotFoundError",
    "GroupMaxSizeReachedError",
    "GroupSubscribedToTopicError",
    "IllegalGenerationError",
    "IllegalSaslStateError",
    "InconsistentClusterIdError",
    "InconsistentGroupProtocolError",
    "InconsistentTopicIdError",
    "InconsistentVoterSetError",
    "IneligibleReplicaError",
    "InvalidCommitOffsetSizeError",
    "InvalidConfigError",
    "InvalidFetchSessionEpochError",
    "InvalidFetchSizeError",
    "InvalidGroupIdError",
    "InvalidPartitionsError",
    "InvalidPrincipalTypeError",
    "InvalidProducerEpochError",
    "InvalidProducerIdMappingError",
    "InvalidRecordError",
    "InvalidRecordStateError",
    "InvalidRegistrationError",
    "InvalidRegularExpressionError",
    "InvalidReplicaAssignmentError",
    "InvalidReplicationFactorError",
    "InvalidRequestError",
    "InvalidRequiredAcksError",
    "InvalidSessionTimeoutError",
    "InvalidShareSessionEpochError",
    "InvalidTimestampError",
    "InvalidTopicError",
    "InvalidTransactionTimeoutError",
    "InvalidTxnStateError",
    "InvalidUpdateVersionError",
    "InvalidVoterKeyError",
    "KafkaError",
    "KafkaStorageError",
    "LeaderNotAvailableError",
    "ListenerNotFoundError",
    "LogDirNotFoundError",
    "MemberIdRequiredError",
    "MessageTooLargeError",
    "MismatchedEndpointTypeError",
    "NetworkExceptionError",
    "NewLeaderElectedError",
    "NoReassignmentInProgressError",
    "NonEmptyGroupError",
    "NotControllerError",
    "NotCoordinatorError",
    "NotEnoughReplicasAfterAppendError",
    "NotEnoughReplicasError",
    "NotLeaderOrFollowerError",
    "OffsetMetadataTooLargeError",
    "OffsetMovedToTieredStorageError",
    "OffsetNotAvailableError",
    "OffsetOutOfRangeError",
    "OperationNotAttemptedError",
    "OutOfOrderSequenceNumberError",
    "PolicyViolationError",
    "PositionOutOfRangeError",
    "PreferredLeaderNotAvailableError",
    "PrincipalDeserializationFailureError",
    "ProducerFencedError",
    "ProtocolError",
    "ReassignmentInProgressError",
    "RebalanceInProgressError",
    "RebootstrapRequiredError",
    "RecordListTooLargeError",
    "ReplicaNotAvailableError",
    "RequestTimedOutError",
    "ResourceNotFoundError",
    "SaslAuthenticationFailedError",
    "SecurityDisabledError",
    "ShareSessionLimitReachedError",
    "ShareSessionNotFoundError",
    "SnapshotNotFoundError",
    "StaleBrokerEpochError",
    "StaleControllerEpochError",
    "StaleMemberEpochError",
    "StreamsInvalidTopologyEpochError",
    "StreamsInvalidTopologyError",
    "StreamsTopologyFencedError",
    "TelemetryTooLargeError",
    "ThrottlingQuotaExceededError",
    "TopicAlreadyExistsError",
    "TopicAuthorizationFailedError",
    "TopicDeletionDisabledError",
    "TransactionAbortableError",
    "TransactionCoordinatorFencedError",
    "TransactionalIdAuthorizationFailedError",
    "TransactionalIdNotFoundError",
    "UnacceptableCredentialError",
    "UnknownControllerIdError",
    "UnknownLeaderEpochError",
    "UnknownMemberIdError",
    "UnknownProducerIdError",
    "UnknownServerError",
    "UnknownSubscriptionIdError",
    "UnknownTopicIdError",
    "UnknownTopicOrPartitionError",
    "UnreleasedInstanceIdError",
    "UnstableOffsetCommitError",
    "UnsupportedAssignorError",
    "UnsupportedCodecError",
    "UnsupportedCompressionTypeError",
    "UnsupportedEndpointTypeError",
    "UnsupportedForMessageFormatError",
    "UnsupportedSaslMechanismError",
    "UnsupportedVersionError",
    "VoterNotFoundError",
    "error_for_code",
    "raise_for_code",
]

# Kafka's Errors.NONE: the error code of a successful response.
NO_ERROR = 0

_UNKNOWN_CODES: dict[int, type[BrokerResponseError]] = {}


def error_for_code(code: int) -> type[BrokerResponseError]:
    """The exception class for a Kafka error code.

    A code this table does not know (a newer broker) gets a subclass of
    :class:`UnknownServerError` that keeps the number, created once per code, so that
    nothing is lost and handlers for unknown errors still catch it.
    """
    try:
        return BY_CODE[code]
    except KeyError:
        pass
    if code == NO_ERROR:
        raise ValueError("error code 0 (NONE) is not an error")
    if not isinstance(code, int) or isinstance(code, bool):
        raise TypeError(f"error code must be an int, got {code!r}")
    cls = _UNKNOWN_CODES.get(code)
    if cls is None:
        cls = type(
            f"UnknownErrorCode{code}Error".replace("-", "Minus"),
            (UnknownServerError,),
            {"code": code, "name": f"UNKNOWN_ERROR_CODE_{code}", "__module__": __name__},
        )
        _UNKNOWN_CODES[code] = cls
    return cls


def raise_for_code(code: int, message: str | None = None) -> None:
    """Raise the exception for ``code`` (with the broker's message); no-op for 0."""
    if code == NO_ERROR:
        return
    _raise(error_for_code(code), message)


def _raise(cls: type[BrokerResponseError], message: str | None) -> NoReturn:
    raise cls(message)
