"""Limits, the token bucket, chunking and the outcome record."""

from __future__ import annotations

import pytest

from reactor.actuators.base import (
    MIB,
    Action,
    Limits,
    Outcome,
    RateLimiter,
    chunk_spans,
    take_bytes,
)


def test_bucket_starts_full_and_refills_at_rate() -> None:
    """A full bucket grants its burst, then refills at rate_bytes_per_s up to the burst."""
    bucket = RateLimiter(1000.0, 4000, now=0.0)
    assert bucket.take(5000, now=0.0) == 4000
    assert bucket.take(10, now=0.0) == 0
    assert bucket.available(now=2.0) == 2000
    assert bucket.available(now=100.0) == 4000


def test_bucket_ignores_time_going_backwards() -> None:
    """A ``now`` earlier than the last one adds no tokens (one timeline only)."""
    bucket = RateLimiter(1000.0, 1000, now=10.0)
    bucket.take(1000, now=10.0)
    assert bucket.available(now=5.0) == 0
    assert bucket.available(now=10.5) == 500


def test_bucket_wait_time_counts_the_missing_bytes() -> None:
    """wait_s is the missing bytes over the rate, capped at the burst."""
    bucket = RateLimiter(100.0, 1000, now=0.0)
    bucket.take(1000, now=0.0)
    assert bucket.wait_s(500, now=0.0) == pytest.approx(5.0)
    assert bucket.wait_s(10**9, now=0.0) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_bytes_per_action": 0}, r"^max_bytes_per_action must be > 0 \(or None\), got 0$"),
        ({"rate_bytes_per_s": -1.0}, r"^rate_bytes_per_s must be finite and > 0 .*got -1.0$"),
        ({"deadline_s": float("inf")}, r"^deadline_s must be finite and > 0, got inf$"),
        ({"chunk_bytes": 100}, r"^chunk_bytes must be >= 4096, got 100$"),
    ],
)
def test_limits_reject_bad_values_with_the_value(kwargs: dict[str, float], message: str) -> None:
    """Each invalid limit is refused with a message that names it and its value."""
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)  # type: ignore[arg-type]


def test_limits_burst_defaults_to_one_second() -> None:
    """Without burst_bytes the bucket holds one second's worth of bytes."""
    bucket = Limits(rate_bytes_per_s=8 * MIB).rate_limiter(0.0)
    assert bucket is not None and bucket.burst_bytes == 8 * MIB


def test_take_bytes_keeps_the_first_budget_bytes_in_order() -> None:
    """take_bytes cuts the span list at the budget and reports the bytes cut."""
    spans, cut = take_bytes([(0, 100), (1000, 100), (5000, 100)], 150)
    assert spans == ((0, 100), (1000, 50))
    assert cut == 150


def test_chunks_hold_at_most_batch_bytes_and_piece_bytes() -> None:
    """A 256 MiB range becomes four 64 MiB calls, each of eight 8 MiB pieces."""
    batches = list(chunk_spans([(0, 256 * MIB)], batch_bytes=64 * MIB, piece_bytes=8 * MIB))
    assert len(batches) == 4
    assert all(sum(n for _, n in b) == 64 * MIB for b in batches)
    assert all(len(b) == 8 and all(n == 8 * MIB for _, n in b) for b in batches)
    assert [s for b in batches for s, _ in b] == list(range(0, 256 * MIB, 8 * MIB))


def test_chunk_cuts_fall_on_alignment() -> None:
    """With align=2 MiB, no cut splits a 2 MiB block between two calls."""
    start = 3 * MIB
    batches = list(chunk_spans([(start, 20 * MIB)], batch_bytes=6 * MIB, align=2 * MIB))
    ends = [s + n for b in batches for s, n in b]
    assert all(e % (2 * MIB) == 0 for e in ends[:-1])
    assert sum(n for b in batches for _, n in b) == 20 * MIB
    assert all(sum(n for _, n in b) <= 6 * MIB for b in batches)


def test_chunks_respect_the_iovec_limit() -> None:
    """No call carries more than max_pieces ranges (UIO_MAXIOV)."""
    spans = [(i * 8192, 4096) for i in range(3000)]
    batches = list(chunk_spans(spans, batch_bytes=64 * MIB, max_pieces=1024))
    assert [len(b) for b in batches] == [1024, 1024, 952]


def test_action_rejects_negative_ranges() -> None:
    """A negative length is a caller's bug, reported with the range."""
    with pytest.raises(ValueError, match=r"^pageout: ranges are \(start, length\) with both >= 0"):
        Action("pageout", 1234, ((0x1000, -1),))


def test_outcome_deltas_are_after_minus_before() -> None:
    """rss_delta_bytes and usage_delta_bytes are computed (negative: memory left)."""
    out = Outcome(
        kind="pageout",
        target="pid 5",
        status="applied",
        requested_bytes=10,
        rss_before_bytes=500,
        rss_after_bytes=200,
    )
    assert out.rss_delta_bytes == -300
    assert out.usage_delta_bytes is None
    assert "usage_before_bytes" not in out.log_fields()
