"""The central reaper: every child is reaped, each status reaches whoever started it."""

from __future__ import annotations

import asyncio
import os
import subprocess

from kestrel.reaper import Reaper


def start(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(argv), start_new_session=True)


def test_statuses_reach_their_waiters() -> None:
    async def scenario() -> tuple[list[int], list[int | None]]:
        reaper = Reaper()
        reaper.install()
        try:
            processes = [start("sh", "-c", f"exit {n}") for n in range(20)]
            futures = [reaper.watch(p) for p in processes]
            killed = start("sleep", "600")
            killed_status = reaper.watch(killed)
            killed.kill()
            codes = list(await asyncio.wait_for(asyncio.gather(*futures), 30))
            codes.append(await asyncio.wait_for(killed_status, 30))
            return codes, [p.returncode for p in [*processes, killed]]
        finally:
            reaper.uninstall()

    codes, returncodes = asyncio.run(scenario())
    assert codes == [*range(20), -9]
    assert returncodes == codes  # Popen learns it too, so it never waits itself


def test_a_child_that_exited_before_the_reaper_was_installed_is_not_lost() -> None:
    early = start("sh", "-c", "exit 5")
    early_pid = early.pid

    async def scenario() -> int:
        reaper = Reaper()
        status = reaper.watch(early)
        os.waitid(os.P_PID, early_pid, os.WEXITED | os.WNOWAIT)  # it is a zombie now
        reaper.install()
        try:
            return await asyncio.wait_for(status, 30)
        finally:
            reaper.uninstall()

    assert asyncio.run(scenario()) == 5


def test_children_nobody_watches_are_reaped_and_counted() -> None:
    async def scenario() -> int:
        reaper = Reaper()
        reaper.install()
        try:
            stray = start("true")
            watched = start("sh", "-c", "sleep 0.2")
            done = reaper.watch(watched)
            await asyncio.wait_for(done, 30)
            while reaper.orphans_reaped < 1:
                await asyncio.sleep(0.01)
            stray.returncode = 0  # reaped as an orphan: tell Popen, as kestrel does for its own
            return reaper.orphans_reaped
        finally:
            reaper.uninstall()

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == 1
