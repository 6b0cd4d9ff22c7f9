"""Token providers for SASL OAUTHBEARER, each behind an optional extra.

- :class:`OIDCTokenProvider`: the OAuth 2 ``client_credentials`` grant (KIP-768) against
  any OIDC identity provider's token endpoint (``pip install kafka-asgi[oauth]``).
- :class:`MSKIAMTokenProvider`: Amazon MSK IAM, signed by AWS's own
  ``aws-msk-iam-sasl-signer-python`` (``pip install kafka-asgi[msk]``).

Pass one as ``sasl_oauth_token_provider`` with ``sasl_mechanism="OAUTHBEARER"``, or
describe it in plain settings (a dict, see :func:`provider_from_settings`).
Importing this package imports neither extra: each is imported when a provider is made.
"""

from kafka_asgi.oauth.msk import MSKIAMTokenProvider
from kafka_asgi.oauth.oidc import OIDCTokenProvider
from kafka_asgi.oauth.settings import provider_from_settings

__all__ = ["MSKIAMTokenProvider", "OIDCTokenProvider", "provider_from_settings"]
