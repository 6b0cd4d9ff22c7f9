"""A token provider from plain settings (a dict): for Django settings, lifespan options,
environment-driven configuration and the CLI, where no Python object can be written.

``{"provider": "oidc", "token_url": ..., "client_id": ..., "client_secret": ...,
"scope": ...}`` makes an :class:`OIDCTokenProvider` (any of its keyword options may
follow); ``{"provider": "msk_iam", "region": ..., "profile": ...}`` an
:class:`MSKIAMTokenProvider`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from kafka_asgi.oauth.msk import MSKIAMTokenProvider
from kafka_asgi.oauth.oidc import OIDCTokenProvider

__all__ = ["PROVIDERS", "provider_from_settings"]

PROVIDERS: dict[str, type[Any]] = {"oidc": OIDCTokenProvider, "msk_iam": MSKIAMTokenProvider}


def provider_from_settings(settings: Mapping[str, Any]) -> Any:
    """The provider that ``settings`` describe; TypeError/ValueError naming the bad key.

    The values are never echoed: the settings hold a client secret.
    """
    if not isinstance(settings, Mapping):
        raise TypeError(f"provider settings must be a dict, not {type(settings).__name__}")
    kind = settings.get("provider")
    cls = PROVIDERS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(
            f"sasl_oauth_token_provider settings: 'provider' must be one of"
            f" {', '.join(sorted(PROVIDERS))}, not {kind!r}"
        )
    options = {k: v for k, v in settings.items() if k != "provider"}
    known = set(inspect.signature(cls).parameters)
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(
            f"sasl_oauth_token_provider settings for {kind!r}: unknown keys {unknown}"
            f" (known: {', '.join(sorted(known))})"
        )
    try:
        return cls(**options)
    except TypeError as exc:
        raise TypeError(f"sasl_oauth_token_provider settings for {kind!r}: {exc}") from None
