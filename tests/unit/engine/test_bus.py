"""The latest-value bus: newest sample wins, drops are counted, staleness by age."""

from __future__ import annotations

import anyio
import pytest

from reactor.engine.bus import Bus


def test_latest_replaces_and_counts_unread_drops() -> None:
    """A sample replaced before anyone read it counts as dropped; a read one does not."""
    bus = Bus()
    bus.publish("t", 1, 0.0)
    bus.publish("t", 2, 1.0)
    assert bus.stats("t").dropped == 1
    sample = bus.latest("t")
    assert sample is not None and sample.value == 2 and sample.seq == 2
    bus.publish("t", 3, 2.0)
    assert bus.stats("t").dropped == 1
    assert bus.stats("t").published == 3


def test_fresh_returns_none_once_the_sample_is_older_than_its_limit() -> None:
    """A policy never sees a sample older than its limit: fresh() says it is stale."""
    bus = Bus()
    bus.publish("t", "v", 10.0)
    assert bus.fresh("t", 12.0, max_age=3.0) is not None
    assert bus.fresh("t", 13.5, max_age=3.0) is None
    assert bus.fresh("missing", 0.0, max_age=3.0) is None


def test_failures_are_counted_with_their_reason() -> None:
    """A failed read is counted and its reason kept; a later publish clears 'failed'."""
    bus = Bus()
    bus.record_failure("t", "EACCES", failed=True)
    assert bus.stats("t").failures == 1 and bus.stats("t").failed
    assert bus.stats("t").last_error == "EACCES"
    bus.publish("t", 1, 0.0)
    assert not bus.stats("t").failed


@pytest.mark.anyio
async def test_wait_newer_wakes_on_publish() -> None:
    """A waiter for a newer sample wakes when one is published, with that sample."""
    bus = Bus()
    bus.publish("t", 1, 0.0)
    got = []

    async def waiter() -> None:
        got.append(await bus.wait_newer("t", 1))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.1)
        assert not got
        bus.publish("t", 2, 0.1)
    assert got[0].value == 2
