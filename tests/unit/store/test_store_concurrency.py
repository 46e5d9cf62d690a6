"""Many threads on one store, as FastAPI's thread pool uses it: writes never collide."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from volantd.store import ConflictError, Database, VMRecord

T = TypeVar("T")
THREADS = 8

MakeVM = Callable[..., VMRecord]
NewVM = Callable[..., VMRecord]


def together(task: Callable[[int], T], count: int = THREADS) -> list[T | Exception]:
    """Runs `task(0..count-1)` on `count` threads released at the same moment."""
    start = threading.Barrier(count)

    def run(index: int) -> T | Exception:
        start.wait()
        try:
            return task(index)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def succeeded(outcomes: list[T | Exception]) -> list[T]:
    failures = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert not failures, failures
    return [outcome for outcome in outcomes if not isinstance(outcome, Exception)]


def test_concurrent_creates_of_one_name_have_exactly_one_winner(
    db: Database, new_vm: NewVM
) -> None:
    records = [new_vm("web-1") for _ in range(THREADS)]  # distinct MACs, one name
    outcomes = together(lambda n: db.vms.create(records[n], {"attempt": n}))
    winners = [outcome for outcome in outcomes if not isinstance(outcome, Exception)]
    losers = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert len(winners) == 1
    assert len(losers) == THREADS - 1
    assert all(isinstance(loser, ConflictError) for loser in losers), losers
    assert {str(loser) for loser in losers} == {'vm "web-1" already exists'}
    assert db.vms.list() == ([winners[0]], 1)
    assert [entry.version for entry in db.vms.config_history("web-1")] == [1]


def test_concurrent_port_leases_never_share_a_port(db: Database) -> None:
    candidates = range(30000, 30100)
    ports = succeeded(together(lambda n: db.ports.lease(f"vm-{n}", "agent", candidates), count=16))
    assert sorted(ports) == list(range(30000, 30016))
    assert sorted(lease.port for lease in db.ports.all()) == sorted(ports)


def test_concurrent_ip_leases_never_share_an_address(db: Database) -> None:
    db.ips.seed("vbr0", [f"10.0.0.{host}" for host in range(2, 40)])
    addresses = succeeded(together(lambda n: db.ips.lease("vbr0", f"vm-{n}"), count=16))
    assert sorted(addresses, key=lambda a: int(a.rsplit(".", 1)[1])) == [
        f"10.0.0.{host}" for host in range(2, 18)
    ]


def test_concurrent_config_writes_each_get_their_own_version(db: Database, make_vm: MakeVM) -> None:
    make_vm("web-1", config={"writer": None})
    written = succeeded(together(lambda n: db.vms.put_config("web-1", {"writer": n})))
    assert sorted(entry.version for entry in written) == list(range(2, THREADS + 2))
    history = db.vms.config_history("web-1")
    assert [entry.version for entry in history] == list(range(THREADS + 1, 0, -1))
    assert db.vms.config("web-1") == history[0]


def test_concurrent_appends_get_distinct_ids_in_commit_order(db: Database) -> None:
    appended = succeeded(together(lambda n: db.events.append("VM_STATE", f"vm-{n}"), count=16))
    ids = sorted(event.id for event in appended)
    assert len(set(ids)) == 16
    assert [event.id for event in db.events.since(0)] == ids
