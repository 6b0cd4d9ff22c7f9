"""A worker process for the spill crash tests: sends records with Kafka away, so
they go to spill_dir, and reports its progress on stdout until it is killed.

    python -m tests.support.spill_worker BOOTSTRAP TOPIC SPILL_DIR COUNT [nowait]

Prints ``spilled=<n> sent=<i>`` lines (flushed): the first n records sent
(values ``%08d`` of 0..n-1) were written to spill_dir by then.

With ``nowait``: records go with ``send_nowait`` (keyed, 20 keys), and a line
``spilled=<n> sent=<i>`` follows every one: the first i records (0..i-1) were
accepted (send_nowait returned) by then.
"""

from __future__ import annotations

import sys

import anyio

from kafka_asgi.producer import Producer


async def main(bootstrap: str, topic: str, spill_dir: str, count: int) -> None:
    producer = Producer(
        bootstrap,
        connect_timeout=0.5,
        delivery_timeout=1.0,
        max_buffering=2_000,
        wait_on_buffer_full=True,
        wait_buffer_timeout=60.0,
        spill_dir=spill_dir,
        spill_segment_bytes=64 * 1024,
        spill_fsync="never",
    )
    async with producer:
        for i in range(count):
            await producer.send_buffered(topic, b"%08d" % i, key=b"k%d" % (i % 20))
            if i % 500 == 0:
                print(f"spilled={producer.stats().spilled} sent={i + 1}", flush=True)
        while True:
            await anyio.sleep(0.1)
            print(f"spilled={producer.stats().spilled} sent={count}", flush=True)


async def nowait(bootstrap: str, topic: str, spill_dir: str, count: int) -> None:
    producer = Producer(
        bootstrap,
        connect_timeout=0.5,
        delivery_timeout=1.0,
        max_buffering=2_000,
        spill_dir=spill_dir,
        spill_segment_bytes=64 * 1024,
        spill_fsync="never",
    )
    out = sys.stdout
    async with producer:
        for i in range(count):
            producer.send_nowait(topic, b"%08d" % i, key=b"k%d" % (i % 20))
            out.write(f"spilled={producer.stats().spilled} sent={i + 1}\n")
            out.flush()
            if i % 50 == 0:
                await anyio.sleep(0.001)  # the broker's pace, roughly: let the producer work
        await anyio.sleep_forever()


if __name__ == "__main__":
    run = nowait if sys.argv[5:] == ["nowait"] else main
    anyio.run(run, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
