"""The client options shared by KafkaClient, Producer and BasicConsumer, and bootstrap parsing.

Everything is validated when the object is constructed, so a typo or a bad value fails
at the line that made the client, with the option's name in the message.
"""

from __future__ import annotations

import ipaddress
import string
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from kafka_asgi.network.config import ConnectionConfig, check_timeout
from kafka_asgi.network.tls import check_ssl_options

__all__ = [
    "CLIENT_OPTION_NAMES",
    "DEFAULT_PORT",
    "BootstrapSpec",
    "ClientOptions",
    "check_client_options",
    "parse_bootstrap",
    "split_client_options",
]

DEFAULT_PORT = 9092

BootstrapSpec: TypeAlias = (
    str | Sequence[str | tuple[str, int] | Mapping[str, Any]] | Mapping[str, Any]
)

_CONNECTION_OPTIONS = frozenset(
    {
        "client_id",
        "ssl",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
        "sasl_oauth_token_provider",
        "sasl_oauth_extensions",
        "connect_timeout",
        "request_timeout",
        "resolver",
    }
)
_CLUSTER_OPTIONS = frozenset(
    {
        "metadata_max_age",
        "refresh_interval",
        "retry_backoff",
        "max_idle_connections",
        "idle_timeout",
        "max_connections_per_broker",
    }
)
CLIENT_OPTION_NAMES = _CONNECTION_OPTIONS | _CLUSTER_OPTIONS
"""Keyword options that KafkaClient accepts (Producer/BasicConsumer pass these through)."""


def split_client_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(client options, the rest)``: for a producer or consumer taking both kinds."""
    client = {k: v for k, v in options.items() if k in CLIENT_OPTION_NAMES}
    rest = {k: v for k, v in options.items() if k not in CLIENT_OPTION_NAMES}
    return client, rest


_TLS_OPTIONS = ("ssl", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


def check_client_options(options: Mapping[str, Any]) -> None:
    """Check client options as KafkaClient will, but without reading the TLS files:
    an app whose module is imported where they are absent (a build step collecting
    static files or writing an OpenAPI document) still loads; the client reads them
    when it is made."""
    ClientOptions.from_options(**{k: v for k, v in options.items() if k not in _TLS_OPTIONS})
    check_ssl_options(
        options.get("ssl"),
        cafile=options.get("ssl_cafile"),
        certfile=options.get("ssl_certfile"),
        keyfile=options.get("ssl_keyfile"),
        check_hostname=options.get("ssl_check_hostname", True),
    )


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value!r}")
    return value


@dataclass(frozen=True)
class ClientOptions:
    """Validated client options: the connection part plus metadata and pool settings."""

    connection: ConnectionConfig
    metadata_max_age: float = 300.0
    refresh_interval: float | None = None
    retry_backoff: float = 0.1
    max_idle_connections: int = 2
    idle_timeout: float = 60.0
    max_connections_per_broker: int = 4
    """Requests are multiplexed over connections; this caps how many one broker gets."""

    @classmethod
    def from_options(cls, **options: Any) -> ClientOptions:
        unknown = sorted(set(options) - CLIENT_OPTION_NAMES)
        if unknown:
            raise TypeError(
                f"unknown client option(s): {', '.join(unknown)}"
                f" (known: {', '.join(sorted(CLIENT_OPTION_NAMES))})"
            )
        connection_options = {k: v for k, v in options.items() if k in _CONNECTION_OPTIONS}
        provider = connection_options.get("sasl_oauth_token_provider")
        if isinstance(provider, Mapping):
            # Plain settings (Django, lifespan options, the CLI) name a built-in provider.
            from kafka_asgi.oauth.settings import provider_from_settings

            connection_options["sasl_oauth_token_provider"] = provider_from_settings(provider)
        connection = ConnectionConfig.from_options(**connection_options)
        max_age = check_timeout("metadata_max_age", options.get("metadata_max_age", 300.0))
        interval = check_timeout(
            "refresh_interval", options.get("refresh_interval"), allow_none=True
        )
        backoff = check_timeout("retry_backoff", options.get("retry_backoff", 0.1))
        idle_timeout = check_timeout("idle_timeout", options.get("idle_timeout", 60.0))
        assert max_age is not None and backoff is not None and idle_timeout is not None
        return cls(
            connection=connection,
            metadata_max_age=max_age,
            refresh_interval=interval,
            retry_backoff=backoff,
            max_idle_connections=_check_count(
                "max_idle_connections", options.get("max_idle_connections", 2), 0
            ),
            idle_timeout=idle_timeout,
            max_connections_per_broker=_check_count(
                "max_connections_per_broker", options.get("max_connections_per_broker", 4), 1
            ),
        )


# What a host name is made of (RFC 1123 letters, digits, '-' and '.', plus the '_'
# of container and cloud names); IPv4 literals are digits and dots.
_HOST_ASCII = frozenset(string.ascii_letters + string.digits + "-._")
# Outside ASCII (internationalized names, IDNA-encoded when connecting): letters,
# marks and digits, the dots IDNA reads as '.' (RFC 3490 section 3.1) and the
# joiners some scripts need inside a label (RFC 5892, CONTEXTJ).
_IDNA_EXTRA = frozenset("\u3002\uff0e\uff61\u200c\u200d")


def _host_char(c: str) -> bool:
    if c.isascii():
        return c in _HOST_ASCII
    return c in _IDNA_EXTRA or unicodedata.category(c)[0] in "LMN"


def _is_port_text(text: str) -> bool:
    # ASCII digits only: str.isdigit() also holds for '²' and '٩', which int()
    # refuses or reads as another port than the one the user saw.
    return text.isascii() and text.isdigit()


def _check_host(host: object, entry: object) -> str:
    if not isinstance(host, str) or not host:
        raise ValueError(f"bootstrap entry {entry!r}: bad host {host!r}")
    if ":" in host:
        # Only an IPv6 literal holds ':' (a 'host:port' string writes it [::1]:9092).
        address, _, zone = host.partition("%")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise ValueError(
                f"bootstrap entry {entry!r}: bad host {host!r}: not an IPv6 address"
            ) from None
        if "%" in host and not (zone and all(c in _HOST_ASCII for c in zone)):
            raise ValueError(f"bootstrap entry {entry!r}: bad host {host!r}: bad zone {zone!r}")
        return host
    if _is_port_text(host):
        raise ValueError(
            f"bootstrap entry {entry!r}: {host!r} is a port, not a host: write 'host:{host}'"
        )
    bad = next((c for c in host if not _host_char(c)), None)
    if bad is not None:
        raise ValueError(
            f"bootstrap entry {entry!r}: bad host {host!r}: {bad!r} cannot be part of a host"
            " name (letters, digits, '-', '_' and '.'; IPv6 as [::1]:9092)"
        )
    return host


def _check_port(port: object, entry: object) -> int:
    # At most 10 digits: int() refuses strings past 4300 digits with its own message.
    if isinstance(port, str) and _is_port_text(port) and len(port) <= 10:
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"bootstrap entry {entry!r}: port must be 1..65535, not {port!r}")
    return port


def _parse_address(text: str) -> tuple[str, int]:
    item = text.strip()
    if not item:
        raise ValueError(f"bootstrap entry {text!r} is empty")
    if item.startswith("["):
        # [IPv6]:port
        close = item.find("]")
        if close < 0:
            raise ValueError(f"bootstrap entry {text!r}: unclosed '[' in an IPv6 address")
        host, rest = item[1:close], item[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"bootstrap entry {text!r}: expected ':port' after ']'")
        port_text = rest[1:] if rest else None
    elif item.count(":") > 1:
        raise ValueError(f"bootstrap entry {text!r}: write IPv6 addresses as [address]:port")
    elif ":" in item:
        host, port_text = item.rsplit(":", 1)
    else:
        host, port_text = item, None
    port = DEFAULT_PORT if port_text is None else _check_port(port_text, text)
    return _check_host(host, text), port


def _parse_entry(entry: object) -> tuple[str, int]:
    if isinstance(entry, str):
        return _parse_address(entry)
    if isinstance(entry, Mapping):
        unknown = set(entry) - {"host", "port"}
        if "host" not in entry or unknown:
            raise ValueError(f"bootstrap entry {entry!r}: expected keys 'host' and 'port'")
        return _check_host(entry["host"], entry), _check_port(
            entry.get("port", DEFAULT_PORT), entry
        )
    if isinstance(entry, (tuple, list)):
        if len(entry) != 2:
            raise ValueError(f"bootstrap entry {entry!r}: expected (host, port)")
        return _check_host(entry[0], entry), _check_port(entry[1], entry)
    raise TypeError(
        f"bootstrap entry {entry!r}: expected 'host:port', (host, port) or"
        f" {{'host': ..., 'port': ...}}, not {type(entry).__name__}"
    )


def parse_bootstrap(bootstrap: object) -> tuple[tuple[str, int], ...]:
    """``(host, port)`` pairs from any accepted bootstrap form, duplicates removed.

    Accepts ``"h1:9092,h2:9092"``, ``["h1:9092", ("h2", 9092), {"host": "h3", "port":
    9092}]``, a single ``(host, port)`` tuple or ``{"host", "port"}`` mapping. A missing
    port means 9092; IPv6 addresses are written ``[::1]:9092``.
    """
    entries: list[object]
    if (
        isinstance(bootstrap, (tuple, list))
        and len(bootstrap) == 2
        and all(isinstance(part, str) for part in bootstrap)
        and ":" not in bootstrap[0]
        and _is_port_text(bootstrap[1].strip())
    ):
        # ("host", "9092") would read as two brokers, "host" and "9092".
        host, port = bootstrap[0].strip(), bootstrap[1].strip()
        raise ValueError(
            f"bootstrap {bootstrap!r}: {port!r} is a port, not a broker address:"
            f" write '{host}:{port}' or ({host!r}, {port})"
        )
    if isinstance(bootstrap, str):
        entries = [part for part in bootstrap.split(",") if part.strip()]
    elif isinstance(bootstrap, Mapping):
        entries = [bootstrap]
    elif (
        isinstance(bootstrap, tuple)
        and len(bootstrap) == 2
        and isinstance(bootstrap[0], str)
        and not isinstance(bootstrap[1], str)
    ):
        entries = [bootstrap]
    elif isinstance(bootstrap, Sequence) and not isinstance(bootstrap, (bytes, bytearray)):
        entries = list(bootstrap)
    else:
        raise TypeError(
            f"bootstrap must be a 'host:port' string or a sequence of addresses,"
            f" not {type(bootstrap).__name__}"
        )
    if not entries:
        raise ValueError("bootstrap lists no broker address")
    return tuple(dict.fromkeys(_parse_entry(e) for e in entries))
