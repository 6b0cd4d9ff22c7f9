"""Amazon MSK IAM access control over SASL OAUTHBEARER, signed by AWS's own signer.

MSK's IAM listeners (port 9098, TLS) take as the OAUTHBEARER token a SigV4-presigned
``kafka-cluster:Connect`` URL, base64url-encoded; ``aws-msk-iam-sasl-signer-python``
makes it from the usual AWS credential chain, a named profile, an assumed role or a
botocore credentials provider. Tokens live 15 minutes; the connection's token cache
asks for a new one after 80% of that.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MSKIAMTokenProvider"]


class MSKIAMTokenProvider:
    """Tokens for Amazon MSK IAM: ``sasl_oauth_token_provider=MSKIAMTokenProvider("eu-west-1")``.

    ``profile`` (a name in ~/.aws/config), ``role_arn`` (assumed through STS, with
    ``role_session_name``) and ``credentials_provider`` (a botocore
    ``CredentialProvider``) are alternatives; with none, the default AWS credential
    chain (environment, config files, container or instance role) signs.
    """

    def __init__(
        self,
        region: str,
        *,
        profile: str | None = None,
        role_arn: str | None = None,
        role_session_name: str | None = None,
        credentials_provider: Any = None,
    ) -> None:
        if not isinstance(region, str) or not region.strip():
            raise ValueError(
                f"region must be an AWS region name such as 'us-east-1', not {region!r}"
            )
        chosen = [
            name
            for name, value in (
                ("profile", profile),
                ("role_arn", role_arn),
                ("credentials_provider", credentials_provider),
            )
            if value is not None
        ]
        if len(chosen) > 1:
            raise ValueError(
                f"give at most one of profile, role_arn, credentials_provider (got {chosen})"
            )
        if role_session_name is not None and role_arn is None:
            raise ValueError("role_session_name needs role_arn")
        for name, value in (("profile", profile), ("role_arn", role_arn)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty str, not {value!r}")
        try:
            from aws_msk_iam_sasl_signer import MSKAuthTokenProvider  # type: ignore[import-untyped]
        except ImportError:
            raise ImportError(
                "MSKIAMTokenProvider needs AWS's signer: pip install 'kafka-asgi[msk]'"
            ) from None
        self._signer = MSKAuthTokenProvider
        self.region = region.strip()
        self.profile = profile
        self.role_arn = role_arn
        self.role_session_name = role_session_name
        self._credentials_provider = credentials_provider

    def __repr__(self) -> str:
        how = (
            f"profile={self.profile!r}"
            if self.profile
            else f"role_arn={self.role_arn!r}"
            if self.role_arn
            else "credentials_provider"
            if self._credentials_provider is not None
            else "default credentials"
        )
        return f"MSKIAMTokenProvider(region={self.region!r}, {how})"

    def token(self) -> tuple[str, float]:
        """A fresh signed token and its expiry (Unix seconds). Blocking: botocore may
        read files or call STS, so the token cache runs it in a worker thread."""
        signer = self._signer
        if self.profile is not None:
            token, expiry_ms = signer.generate_auth_token_from_profile(self.region, self.profile)
        elif self.role_arn is not None:
            if self.role_session_name is not None:
                token, expiry_ms = signer.generate_auth_token_from_role_arn(
                    self.region, self.role_arn, self.role_session_name
                )
            else:
                token, expiry_ms = signer.generate_auth_token_from_role_arn(
                    self.region, self.role_arn
                )
        elif self._credentials_provider is not None:
            token, expiry_ms = signer.generate_auth_token_from_credentials_provider(
                self.region, self._credentials_provider
            )
        else:
            token, expiry_ms = signer.generate_auth_token(self.region)
        return str(token), float(expiry_ms) / 1000
