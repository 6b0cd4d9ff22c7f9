#!/usr/bin/env python3
"""A tiny OAuth 2 identity provider for the tests' OAUTHBEARER listeners (stdlib + openssl).

It signs RS256 JWTs with a throw-away RSA key and serves, on 127.0.0.1:

    POST /token   client_credentials grant (RFC 6749 4.4): client id and secret by
                  HTTP Basic or in the form; answers access_token, expires_in, scope
    GET  /jwks    the public key (RFC 7517), which the broker's
                  OAuthBearerValidatorCallbackHandler checks signatures against
    GET  /stats?client_id=X   {"token_requests": N}: how often X asked for a token

A client's secret is ``secret_for(client_id)``. The client id's prefix chooses a
misbehaviour, so that tests need no server-side set-up:

    expired-...      a token whose ``exp`` is 10 minutes ago (expires_in still 3600)
    wrongaud-...     a token for another audience
    ttl<N>-...       a token valid for N seconds (default 3600)
    flaky<N>-...     the first N requests answer 503

Usage: ``python scripts/oauth_idp.py --state-dir D --port P`` (kafka_local.py starts it
next to the broker). This is a test tool, not part of the installed package.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus, urlparse

AUDIENCE = "kafka"
ISSUER = "https://idp.kafka-asgi.test"
KEY_ID = "kafka-asgi-test-key"
DEFAULT_TTL = 3600
CLIENT_ID = "kafka-asgi-client"


def secret_for(client_id: str) -> str:
    return f"s3cret-of-{client_id}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    proc = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.decode()}")
    return proc.stdout


def make_keys(state: Path) -> None:
    """The signing key, and a second one the JWKS does not list (for forged tokens)."""
    for name in ("oauth.key", "oauth-rogue.key"):
        _openssl("genrsa", "-out", str(state / name), "2048")


def jwks(state: Path) -> dict[str, object]:
    text = _openssl("rsa", "-in", str(state / "oauth.key"), "-noout", "-modulus").decode()
    modulus = bytes.fromhex(text.strip().split("=", 1)[1])
    key = {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": KEY_ID,
        "n": _b64url(modulus),
        "e": _b64url((65537).to_bytes(3, "big")),
    }
    return {"keys": [key]}


def sign_jwt(state: Path, claims: dict[str, object], key: str = "oauth.key") -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": KEY_ID}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = _openssl("dgst", "-sha256", "-sign", str(state / key), data=signing_input.encode())
    return f"{signing_input}.{_b64url(signature)}"


def claims_for(
    client_id: str, ttl: float = DEFAULT_TTL, scope: str = "kafka", now: float | None = None
) -> dict[str, object]:
    now = time.time() if now is None else now
    return {
        "iss": ISSUER,
        "sub": client_id,
        "aud": AUDIENCE,
        "iat": int(now),
        "exp": int(now + ttl),
        "scope": scope,
        "jti": uuid.uuid4().hex,
    }


class IdP(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: Path, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state
        self.jwks = json.dumps(jwks(state)).encode()
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}


class _Handler(BaseHTTPRequestHandler):
    server: IdP

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: dict[str, object] | bytes) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/jwks":
            self._send(200, self.server.jwks)
        elif url.path == "/stats":
            client_id = parse_qs(url.query).get("client_id", [""])[0]
            with self.server.lock:
                count = self.server.requests.get(client_id, 0)
            self._send(200, {"token_requests": count})
        else:
            self._send(404, {"error": "not_found"})

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/token":
            self._send(404, {"error": "not_found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                pair = base64.b64decode(auth[6:]).decode()
                client_id, _, secret = (unquote_plus(part) for part in pair.partition(":"))
            except (binascii.Error, UnicodeDecodeError):
                self._send(400, {"error": "invalid_request"})
                return
        with self.server.lock:
            count = self.server.requests.get(client_id, 0) + 1
            self.server.requests[client_id] = count
        flaky = re.match(r"flaky(\d+)-", client_id)
        if flaky and count <= int(flaky.group(1)):
            self._send(503, {"error": "temporarily_unavailable"})
            return
        if form.get("grant_type") != "client_credentials":
            self._send(400, {"error": "unsupported_grant_type"})
            return
        if not client_id or secret != secret_for(client_id):
            self._send(401, {"error": "invalid_client"})
            return
        ttl: float = DEFAULT_TTL
        match = re.match(r"ttl(\d+)-", client_id)
        if match:
            ttl = int(match.group(1))
        scope = form.get("scope") or "kafka"
        claims = claims_for(client_id, ttl, scope)
        if client_id.startswith("expired-"):
            claims["exp"] = int(time.time()) - 600
        if client_id.startswith("wrongaud-"):
            claims["aud"] = "someone-else"
        token = sign_jwt(self.server.state, claims)
        self._send(
            200,
            {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": scope},
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    state = args.state_dir.resolve()
    if not (state / "oauth.key").exists():
        make_keys(state)
    server = IdP(state, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
