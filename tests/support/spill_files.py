"""Damage done to a spill store's files by hand, as a crash or a power cut leaves them."""

from __future__ import annotations

from kafka_asgi.producer.spill import SpillStore


def zero_fill(store: SpillStore, start: int, length: int) -> None:
    """Zeros over ``length`` bytes of the store's one segment at ``start``, as a power
    cut leaves blocks whose data never reached the disk."""
    assert store.own is not None
    (seg_path,) = store.own.glob("*.seg")
    with open(seg_path, "r+b") as f:
        f.seek(start)
        f.write(bytes(length))
