"""The workload log ring: bounded, sequenced, split into lines, with followers."""

from __future__ import annotations

import asyncio

from kestrel.logs import MAX_LINE_BYTES, LineSplitter, LogBuffer, format_time


def test_ring_keeps_the_newest_lines_and_counts_the_dropped() -> None:
    ring = LogBuffer(max_lines=3)
    for n in range(5):
        ring.append("stdout", f"line {n}")
    assert [line.text for line in ring.tail()] == ["line 2", "line 3", "line 4"]
    assert [line.seq for line in ring.tail()] == [3, 4, 5]
    assert ring.dropped == 2 and ring.last_seq == 5


def test_ring_is_bounded_by_size_too() -> None:
    ring = LogBuffer(max_lines=1000, max_bytes=100)
    for n in range(10):
        ring.append("stderr", f"{n}" * 30)
    kept = ring.tail()
    assert sum(len(line.text) for line in kept) <= 100
    assert kept[-1].text == "9" * 30 and ring.dropped == 10 - len(kept)


def test_a_single_oversized_line_is_still_kept() -> None:
    ring = LogBuffer(max_bytes=10)
    ring.append("stdout", "x" * 50)
    assert [line.text for line in ring.tail()] == ["x" * 50]


def test_tail_filters_by_stream_and_after_resumes_from_a_sequence_number() -> None:
    ring = LogBuffer()
    for n in range(6):
        ring.append("stdout" if n % 2 == 0 else "stderr", str(n))
    assert [line.text for line in ring.tail(2)] == ["4", "5"]
    assert [line.text for line in ring.tail(2, "stderr")] == ["3", "5"]
    assert [line.text for line in ring.after(4)] == ["4", "5"]
    assert [line.text for line in ring.after(2, "stdout")] == ["2", "4"]
    assert ring.after(6) == [] and ring.tail(0) == []


def test_after_works_once_old_lines_were_dropped() -> None:
    ring = LogBuffer(max_lines=2)
    for n in range(5):
        ring.append("stdout", str(n))
    assert [line.text for line in ring.after(0)] == ["3", "4"]
    assert [line.text for line in ring.after(4)] == ["4"]


def test_lines_carry_time_and_serialise_to_json_fields() -> None:
    ring = LogBuffer()
    line = ring.append("stdout", "hello").as_dict()
    assert set(line) == {"seq", "time", "uptime_ms", "stream", "line"}
    assert line["line"] == "hello" and line["time"].endswith("Z")
    assert format_time(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123Z"


def test_splitter_joins_partial_lines_and_strips_carriage_returns() -> None:
    lines: list[tuple[str, str]] = []
    splitter = LineSplitter("stdout", lambda stream, text: lines.append((stream, text)))
    splitter.feed(b"first\r\nsec")
    splitter.feed(b"ond\n\nthird without newline")
    assert lines == [("stdout", "first"), ("stdout", "second"), ("stdout", "")]
    splitter.close()
    assert lines[-1] == ("stdout", "third without newline")


def test_splitter_cuts_very_long_lines_and_replaces_bad_utf8() -> None:
    lines: list[str] = []
    splitter = LineSplitter("stderr", lambda stream, text: lines.append(text))
    splitter.feed(b"a" * (MAX_LINE_BYTES * 2 + 5))
    assert lines == ["a" * MAX_LINE_BYTES] * 2
    splitter.feed(b"\xff\xfe ok\n")
    assert lines[-1] == "a" * 5 + "\ufffd\ufffd ok"


def test_followers_wake_on_new_lines_and_on_close() -> None:
    async def scenario() -> list[object]:
        ring = LogBuffer()
        results: list[object] = []

        async def follower() -> None:
            results.append(await ring.wait_beyond(0))
            results.append([line.text for line in ring.after(0)])
            results.append(await ring.wait_beyond(ring.last_seq))

        task = asyncio.ensure_future(follower())
        await asyncio.sleep(0)
        ring.append("stdout", "news")
        await asyncio.sleep(0)
        ring.close()
        await task
        return results

    assert asyncio.run(scenario()) == [True, ["news"], False]
