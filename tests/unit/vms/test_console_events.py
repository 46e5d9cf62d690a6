"""Following kestrel's console events in a serial log that is still being written."""

from __future__ import annotations

from pathlib import Path

from volantd.vms.console import ConsoleEvents


def test_events_are_read_once_whole_lines_only_and_noise_skipped(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"[    0.1] kernel noise\ninit: started at uptime 1.482 s\n")
    events = ConsoleEvents(log)
    assert events.read() == [{"event": "init_started", "uptime_ms": 1482}]
    with log.open("ab") as out:
        out.write(b'/ # \nvolant-event {"event":"agent_ready","uptime_ms":2788}\nvolant-event {"ev')
    assert events.read() == [{"event": "agent_ready", "uptime_ms": 2788}]
    with log.open("ab") as out:  # the rest of the half-written line, then garbage
        out.write(b'ent":"workload_healthy","uptime_ms":2900}\nvolant-event {not json\n')
    assert events.read() == [{"event": "workload_healthy", "uptime_ms": 2900}]
    assert events.read() == []


def test_following_from_the_end_skips_an_earlier_boot(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b'volant-event {"event":"agent_ready","uptime_ms":1}\n')
    events = ConsoleEvents.from_end(log)
    assert events.read() == []
    with log.open("ab") as out:
        out.write(b'volant-event {"event":"agent_ready","uptime_ms":2}\n')
    assert events.read() == [{"event": "agent_ready", "uptime_ms": 2}]
    assert ConsoleEvents.from_end(tmp_path / "missing.log").read() == []
