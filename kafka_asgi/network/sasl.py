"""SASL mechanisms as sans-I/O state machines: tokens in, tokens out.

The connection drives them over SaslAuthenticate (KIP-152) or, for brokers without
it, over raw length-prefixed tokens after SaslHandshake v0. PLAIN is RFC 4616;
SCRAM-SHA-256/512 (RFC 5802, KIP-84) is delegated to ``scramp``, which also checks
the server's final signature, so a broker that does not know the password cannot
pass for one that does.

Credentials are kept out of every ``repr``, log line and exception message.
"""

from __future__ import annotations

from typing import Protocol

from kafka_asgi.network.errors import AuthenticationError

__all__ = [
    "SASL_MECHANISMS",
    "PlainMechanism",
    "SaslCredentials",
    "SaslMechanism",
    "ScramMechanism",
]

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class SaslCredentials:
    """A mechanism name with a username and password that never print."""

    __slots__ = ("_password", "_username", "mechanism")

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        if not isinstance(mechanism, str):
            raise TypeError(f"sasl_mechanism must be a str, not {type(mechanism).__name__}")
        if mechanism.upper() not in SASL_MECHANISMS:
            raise ValueError(
                f"sasl_mechanism={mechanism!r} is not supported; use one of"
                f" {', '.join(SASL_MECHANISMS)}, or OAUTHBEARER with sasl_oauth_token_provider"
            )
        # The values are not echoed: a password passed as the username by mistake
        # would otherwise end up in a traceback.
        if not isinstance(username, str):
            raise TypeError(f"sasl_username must be a str, not {type(username).__name__}")
        if not isinstance(password, str):
            raise TypeError(f"sasl_password must be a str, not {type(password).__name__}")
        if not username:
            raise ValueError("sasl_username must not be empty")
        self.mechanism = mechanism.upper()
        self._username = username
        self._password = password

    @property
    def username(self) -> str:
        return self._username

    @property
    def password(self) -> str:
        return self._password

    def __repr__(self) -> str:
        return f"SaslCredentials(mechanism={self.mechanism!r}, username=***, password=***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SaslCredentials):
            return NotImplemented
        return (self.mechanism, self._username, self._password) == (
            other.mechanism,
            other._username,
            other._password,
        )

    def __hash__(self) -> int:
        return hash((self.mechanism, self._username, self._password))

    def __reduce__(self) -> tuple[type[SaslCredentials], tuple[str, str, str]]:
        # Pickling (multiprocessing hand-off) keeps working; printing does not leak.
        return (SaslCredentials, (self.mechanism, self._username, self._password))

    def secrets(self) -> tuple[str, ...]:
        """What must never be shown (for scrubbing broker messages)."""
        return (self._password, self._username)

    def new_mechanism(self) -> SaslMechanism:
        """A fresh state machine for one authentication exchange."""
        if self.mechanism == "PLAIN":
            return PlainMechanism(self._username, self._password)
        return ScramMechanism(self.mechanism, self._username, self._password)


class SaslMechanism(Protocol):
    name: str

    @property
    def complete(self) -> bool:
        """True once the client has nothing more to send or to check."""
        ...

    def start(self) -> bytes:
        """The client's first token."""
        ...

    def respond(self, challenge: bytes) -> bytes | None:
        """The next token for the server's ``challenge``; None when the exchange is done.

        Raises AuthenticationError when the server's message is wrong.
        """
        ...


class PlainMechanism:
    """RFC 4616: one message, ``authzid NUL authcid NUL passwd``; no server challenge."""

    name = "PLAIN"

    __slots__ = ("_password", "_started", "_username")

    def __init__(self, username: str, password: str) -> None:
        self._username = username
        self._password = password
        self._started = False

    def __repr__(self) -> str:
        return "PlainMechanism(***)"

    @property
    def complete(self) -> bool:
        return self._started

    def start(self) -> bytes:
        self._started = True
        return b"\x00" + self._username.encode() + b"\x00" + self._password.encode()

    def respond(self, challenge: bytes) -> bytes | None:
        return None


class ScramMechanism:
    """SCRAM (RFC 5802) client-first, client-final, then verifying server-final.

    Kafka does not apply RFC 4013 SASLprep (KIP-84): the broker salts the password's
    raw UTF-8 bytes (Java's ``ScramFormatter.normalize``) and only escapes ``,`` and
    ``=`` in the username. scramp, which runs the exchange, prepares both by SASLprep,
    so they are handed to it as given: a password with a no-break space, a ligature,
    a tab or an emoji then proves what the broker stored.
    """

    __slots__ = ("_client", "_step", "name")

    def __init__(self, name: str, username: str, password: str) -> None:
        # Imported here: scramp (and asn1crypto under it) costs ``import kafka_asgi``
        # about 4% of its instructions, and most producers never use SCRAM.
        from scramp import ScramClient  # type: ignore[import-untyped]

        self.name = name
        if not username:
            raise AuthenticationError(f"{name}: the username is empty")
        for what, value in (("username", username), ("password", password)):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                # Not echoed: the position would point into the secret.
                raise AuthenticationError(
                    f"{name}: the {what} is not valid Unicode (a lone surrogate)"
                ) from None
        # scramp has no option to skip SASLprep: it is given ASCII stand-ins, which
        # SASLprep leaves alone, and its objects holding them are then replaced by ones
        # holding the values as they are.
        client = ScramClient([name], "username", "password")
        client.username = _unprepared(client.username, "username", username, name)
        client.password = _unprepared(client.password, "password", password, name)
        self._client = client
        self._step = 0

    def __repr__(self) -> str:
        return f"ScramMechanism({self.name!r}, ***)"

    @property
    def complete(self) -> bool:
        return self._step >= 3

    def start(self) -> bytes:
        self._step = 1
        return str(self._client.get_client_first()).encode()

    def respond(self, challenge: bytes) -> bytes | None:
        from scramp import ScramException  # loaded by __init__ already

        try:
            text = challenge.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthenticationError(f"{self.name}: the server's message is not UTF-8") from None
        try:
            if self._step == 1:
                self._client.set_server_first(text)
                self._step = 2
                return str(self._client.get_client_final()).encode()
            if self._step == 2:
                # Raises unless the server proved it knows the salted password.
                self._client.set_server_final(text)
                self._step = 3
                return None
        except ScramException as exc:
            raise AuthenticationError(f"{self.name}: {exc}") from None
        raise AuthenticationError(f"{self.name}: unexpected message after the exchange ended")


def _unprepared(stand_in: object, attribute: str, value: str, name: str) -> object:
    """A copy of scramp's Username or Password ``stand_in`` holding ``value`` as it is.

    scramp (1.5) keeps the SASLprep-ed string in one attribute of these objects,
    named like them, and reads it there: ``Username.escape()`` escapes ``=`` and ``,``,
    ``bytes(Password)`` is its UTF-8. A scramp that works otherwise fails here, loudly,
    rather than proving a password the broker never stored.
    """
    raw = object.__new__(type(stand_in))
    try:
        if getattr(stand_in, attribute) != attribute:
            raise AttributeError(attribute)
        setattr(raw, attribute, value)
        if attribute == "username":
            works = raw.escape() == value.replace("=", "=3D").replace(",", "=2C")  # type: ignore[attr-defined]
        else:
            works = bytes(raw) == value.encode("utf-8")  # type: ignore[call-overload]
    except (AttributeError, TypeError):
        works = False
    if not works:
        import scramp

        version = getattr(scramp, "__version__", "")
        raise AuthenticationError(
            f"{name}: scramp {version} is not one kafka_asgi can use: it must"
            f" send the {attribute} without RFC 4013 SASLprep, as Kafka's brokers expect"
        )
    return raw
