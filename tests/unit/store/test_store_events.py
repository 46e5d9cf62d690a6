"""The event log: monotonic ids that SSE clients resume from."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

from volantd.store import Database, open_database


def test_appended_events_read_back_in_order(db: Database) -> None:
    created = db.events.append("VM_CREATED", "web-1", "created", "vm record created", {"a": 1})
    running = db.events.append("VM_STATE", "web-1", "running", "vm running")
    assert created.id < running.id
    assert created.created_at.tzinfo is UTC
    assert db.events.since(0) == [created, running]
    assert (running.data, running.type, running.status) == (None, "VM_STATE", "running")


def test_since_resumes_after_the_last_seen_id(db: Database) -> None:
    ids = [db.events.append("VM_STATE", "web-1", message=str(n)).id for n in range(5)]
    assert [event.id for event in db.events.since(ids[1])] == ids[2:]
    assert [event.id for event in db.events.since(ids[1], limit=2)] == ids[2:4]
    assert db.events.since(ids[-1]) == []
    assert db.events.last_id() == ids[-1]


def test_for_vm_gives_the_latest_events_of_one_vm_oldest_first(db: Database) -> None:
    for n in range(4):
        db.events.append("VM_STATE", "web-1", message=f"web-1 #{n}")
        db.events.append("VM_STATE", "web-2", message=f"web-2 #{n}")
    db.events.append("PLUGIN_INSTALLED", None, message="caddy")
    assert [event.message for event in db.events.for_vm("web-1", limit=2)] == [
        "web-1 #2",
        "web-1 #3",
    ]


def test_prune_keeps_the_newest_and_ids_are_never_reused(db: Database) -> None:
    ids = [db.events.append("VM_STATE", "web-1").id for _ in range(5)]
    assert db.events.prune(keep_last=2) == 3
    assert [event.id for event in db.events.since(0)] == ids[3:]
    assert db.events.prune(keep_last=0) == 2
    assert db.events.since(0) == []
    assert db.events.last_id() == 0
    assert db.events.append("VM_STATE", "web-1").id == ids[-1] + 1


def test_ids_keep_growing_across_restarts(db_path: Path) -> None:
    with open_database(db_path) as db:
        last = db.events.append("VM_CREATED", "web-1").id
        db.events.prune(keep_last=0)
    with open_database(db_path) as db:
        assert db.events.append("VM_STATE", "web-1").id == last + 1
