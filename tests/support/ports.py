"""Free ports on 127.0.0.1 for servers and brokers that tests start themselves."""

from __future__ import annotations

import random
import socket

# The listeners a broker of scripts/kafka_local.py may open from its base port: the
# single node's base+0..5, OAuth's base+6..8, a spare, and a three-node cluster's
# base+10..13 (the port layout agreed in scripts/kafka_local.py).
BROKER_PORTS = 14


def free_port() -> int:
    """A port nothing listens on right now (for "connection refused" cases)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_base_port(count: int = BROKER_PORTS) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 right now: the
    listeners of a broker that a test starts for itself (fixed ports would clash
    with another run on the same machine)."""
    # Below the kernel's ephemeral range, so that no outgoing connection takes one of
    # them between this check and the broker's bind.
    low = 20000
    high = 60000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
        if ephemeral_low - count > low + 1000:
            high = ephemeral_low
    except (OSError, ValueError, IndexError):
        pass
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")
