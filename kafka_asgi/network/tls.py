"""Building the client's ``ssl.SSLContext`` from the client options.

Verification is on by default (certificate chain and host name), as for any TLS
client; turning host name checks off is an explicit ``ssl_check_hostname=False``.
"""

from __future__ import annotations

import os
import ssl

__all__ = ["build_ssl_context", "check_ssl_options"]


def _path(option: str, path: object) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{option} must be a path (str), not {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{option} must be a str path, not bytes")
    return text


def _readable_file(option: str, path: object) -> str:
    text = _path(option, path)
    if not os.path.isfile(text):
        raise ValueError(f"{option}={text!r}: no such file")
    return text


def check_ssl_options(
    ssl_option: bool | ssl.SSLContext | None = None,
    *,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    check_hostname: bool = True,
) -> bool:
    """Whether the options ask for TLS; TypeError/ValueError naming a bad one. The
    files are not read (see :func:`build_ssl_context`)."""
    if ssl_option is not None and not isinstance(ssl_option, (bool, ssl.SSLContext)):
        raise TypeError(
            f"ssl must be True, False, None or an ssl.SSLContext, not {type(ssl_option).__name__}"
        )
    if not isinstance(check_hostname, bool):
        raise TypeError(f"ssl_check_hostname must be a bool, not {type(check_hostname).__name__}")
    files = {"ssl_cafile": cafile, "ssl_certfile": certfile, "ssl_keyfile": keyfile}
    given = {name: value for name, value in files.items() if value is not None}
    if isinstance(ssl_option, ssl.SSLContext):
        if given:
            raise ValueError(
                f"{', '.join(given)} cannot be combined with ssl=<SSLContext>;"
                " load the files into the context instead"
            )
        return True
    if ssl_option is False and given:
        raise ValueError(f"ssl=False contradicts {', '.join(given)}")
    if not ssl_option and not given:
        return False
    if keyfile is not None and certfile is None:
        raise ValueError("ssl_keyfile needs ssl_certfile (the client certificate)")
    for name, value in given.items():
        _path(name, value)
    return True


def build_ssl_context(
    ssl_option: bool | ssl.SSLContext | None = None,
    *,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext | None:
    """The context to wrap broker connections in, or None for plaintext.

    ``ssl_option`` is the ``ssl`` client option: a ready context is used as given
    (the ``ssl_*`` file options may not be combined with it); True means the system's
    CA store. Any of ``cafile``/``certfile``/``keyfile`` implies TLS. Files are loaded
    here, so a missing or malformed file fails at construction time with the option's
    name, not at the first connection.
    """
    tls = check_ssl_options(
        ssl_option, cafile=cafile, certfile=certfile, keyfile=keyfile, check_hostname=check_hostname
    )
    if isinstance(ssl_option, ssl.SSLContext):
        return ssl_option
    if not tls:
        return None

    ca = _readable_file("ssl_cafile", cafile) if cafile is not None else None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except ssl.SSLError as exc:
        raise ValueError(f"ssl_cafile={ca!r} holds no usable CA certificate: {exc}") from None
    context.check_hostname = check_hostname
    # create_default_context already requires a verified certificate; restate it so a
    # future default change cannot silently turn verification off.
    context.verify_mode = ssl.CERT_REQUIRED
    if certfile is not None:
        cert = _readable_file("ssl_certfile", certfile)
        key = _readable_file("ssl_keyfile", keyfile) if keyfile is not None else None
        try:
            # An empty password makes an encrypted key fail here instead of OpenSSL
            # prompting on the terminal.
            context.load_cert_chain(cert, key, password="")
        except ssl.SSLError as exc:
            raise ValueError(
                f"ssl_certfile={cert!r}/ssl_keyfile={key!r}: cannot load the client"
                f" certificate and key: {exc}"
            ) from None
    return context
