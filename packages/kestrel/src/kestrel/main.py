"""kestrel's entry point: the synchronous boot phase, then the agent.

As PID 1 (exec'd by the C init, see docs/guest.md) kestrel takes no arguments: it reads
``/etc/volant/vm.json`` (for the rootfs strategy it first switches to the root disk and
execs itself there: :mod:`kestrel.rootfs`, stage 1), sets the hostname, configures the
network, opens its listening sockets and starts the workload (and a thread probing its
health), all before importing asyncio and h11 (the slowest part of its start-up), so the
workload boots, and is reported healthy, while the agent finishes starting. It never exits:
after a shutdown it syncs and powers the machine off, and a fatal error is printed on the
console (and as a ``boot_failed`` event) and powers off too.

As an ordinary process (development, tests) it touches nothing system-wide by default and
exits 0 after a shutdown.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NamedTuple

from . import __version__
from .config import DEFAULT_CONFIG_PATH, load_config
from .console import Console
from .errors import ConfigError, KestrelError
from .rootfs import STAGE2_CONFIG, is_stage2, root_mounted_ms
from .system import disable_ctrl_alt_del, is_pid1, power_off, set_hostname, sync, uptime_ms

DEFAULT_STOP_TIMEOUT_S = 10.0


class Options(NamedTuple):
    """Command-line options (all optional; PID 1 gets none)."""

    config: str = DEFAULT_CONFIG_PATH
    listen: str | None = None
    console: str | None = None
    system: bool | None = None
    console_shell: bool = False
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S


def parse_options(argv: list[str]) -> Options:
    """Parse ``argv`` (without the program name)."""
    if not argv:
        return Options()
    import argparse

    parser = argparse.ArgumentParser(
        prog="kestrel",
        description="Volant guest agent: PID 1 inside every microVM, or an ordinary process.",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="vm.json to read")
    parser.add_argument(
        "--listen", help="HOST:PORT for the API (default 0.0.0.0:<agent.tcp_port>; port 0: any)"
    )
    parser.add_argument(
        "--console",
        help="where volant-event lines and the console shell go "
        "(default /dev/console as PID 1, else standard output; '-' is standard output)",
    )
    system = parser.add_mutually_exclusive_group()
    system.add_argument(
        "--system",
        dest="system",
        action="store_const",
        const=True,
        help="set hostname and network although not PID 1 (in a container or namespace)",
    )
    system.add_argument(
        "--no-system",
        dest="system",
        action="store_const",
        const=False,
        help="leave hostname and network alone (the default when not PID 1)",
    )
    parser.add_argument(
        "--console-shell",
        action="store_true",
        help="run a shell on --console although not PID 1 (PID 1 follows vm.json console_shell)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT_S,
        metavar="SECONDS",
        help="grace between SIGTERM and SIGKILL when stopping the workload (default 10)",
    )
    parser.add_argument("--version", action="version", version=f"kestrel {__version__}")
    args = parser.parse_args(argv)
    return Options(
        config=args.config,
        listen=args.listen,
        console=args.console,
        system=args.system,
        console_shell=args.console_shell,
        stop_timeout_s=args.stop_timeout,
    )


class BootFailure(KestrelError):
    """The boot cannot go on: as PID 1 the VM powers off; otherwise kestrel exits ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class _EarlySignals:
    """Remembers a shutdown signal that arrives before the event loop handles signals."""

    def __init__(self) -> None:
        self.received: str | None = None
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGPWR):
            signal.signal(number, self._record)

    def _record(self, number: int, frame: object) -> None:
        if self.received is None:
            self.received = f"signal {signal.Signals(number).name}"


def run() -> None:
    """Program entry (``python -m kestrel``, ``python kestrel.pyz``): exit with main()'s status.

    kestrel never speaks TLS, yet importing asyncio loads OpenSSL (5-15 ms of a 65-85 ms
    start on a development machine, far more under TCG). Marking ``ssl`` unavailable makes
    asyncio skip it, as it does on interpreters built without ssl. Only the program entry
    does this, never :func:`main`, so importing kestrel leaves the interpreter untouched.
    """
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    raise SystemExit(main())


def main(argv: list[str] | None = None) -> int:
    """Run kestrel; returns the exit status (as PID 1 it never returns)."""
    started_ms = uptime_ms()
    arguments = sys.argv[1:] if argv is None else argv
    if not is_pid1():
        options = parse_options(arguments)
        console = _open_console(options.console, False)
        try:
            return _boot(options, console, False, started_ms)
        except BootFailure as failure:
            console.log(f"fatal: {failure}")
            return failure.status
    console = Console(1, owned=False)  # the init's console until ours is open
    try:
        options = parse_options(arguments)
        if not arguments and is_stage2():  # exec'd by stage 1 inside the root disk
            options = options._replace(config=STAGE2_CONFIG)
        console = _open_console(options.console, True)
        _boot(options, console, True, started_ms)
    except KestrelError as error:  # PID 1 must not die: report, then power off
        console.log(f"fatal: {error}")
        console.event("boot_failed", reason=str(error))
    except BaseException as error:
        import traceback

        for line in traceback.format_exception(error):
            console.log(line.rstrip())
        console.event("boot_failed", reason=f"kestrel crashed: {error!r}")
    _power_off(console)
    return 0  # not reached


def _open_console(path: str | None, pid1: bool) -> Console:
    try:
        return Console.open(path or ("/dev/console" if pid1 else None))
    except OSError as error:  # no such device: say so where we can, and carry on
        console = Console(1, owned=False)
        console.log(f"cannot open console {path or '/dev/console'}: {error}")
        return console


def _boot(options: Options, console: Console, pid1: bool, started_ms: int) -> int:
    signals = _EarlySignals()
    try:
        config = load_config(options.config)
    except ConfigError as error:
        raise BootFailure(str(error), status=2) from None
    if pid1 and config.boot.strategy == "rootfs" and not is_stage2():
        from .rootfs import switch_to_root_disk

        switch_to_root_disk(config.boot, options.config, console)  # execs stage 2
    system = options.system if options.system is not None else pid1
    hostname_error = network = None
    if system:
        from .netconfig import configure_network

        try:
            set_hostname(config.hostname)
        except OSError as error:
            hostname_error = f"cannot set hostname {config.hostname!r}: {error.strerror or error}"
            console.log(hostname_error)
        network = configure_network(
            config.network,
            hostname=config.hostname,
            log=lambda message: console.log(f"network: {message}"),
        )
        for problem in network.errors:
            console.log(f"network: {problem}")
        if config.disks:
            from .disks import mount_disks

            mount_disks(config.disks, console.log)  # a failure is a boot failure
    from .listeners import open_listeners

    try:
        sockets = open_listeners(options.listen, config, console)
    except KestrelError as error:
        raise BootFailure(str(error), status=1) from None
    workload_start = first_health = None
    if config.workload is not None:
        from .healthcheck import FirstHealthCheck
        from .workload import announce_start, start_workload

        workload_start = start_workload(config.workload, console)
        if workload_start.process is not None:
            announce_start(console, workload_start, restarts=0)
            first_health = FirstHealthCheck(
                config.workload, console, workload_start.process.pid, workload_start.monotonic
            ).start()
    if pid1 and system:
        try:
            disable_ctrl_alt_del()  # after the workload start: it costs a ctypes import
        except (OSError, ImportError) as error:
            console.log(f"Ctrl-Alt-Del stays a hard reboot: {error}")
    shell_device = None
    if options.console_shell or (pid1 and config.console_shell):
        shell_device = options.console or ("/dev/console" if pid1 else None)
        if shell_device in (None, "-"):
            console.log("console shell: needs --console DEVICE (a terminal); not started")
            shell_device = None

    import asyncio

    from .agent import Agent, BootState

    boot = BootState(
        started_ms=started_ms,
        init_started_ms=_init_started_ms(),
        root_mounted_ms=root_mounted_ms() if is_stage2() else None,
        pid1=pid1,
        system=system,
        network=network,
        hostname_error=hostname_error,
        sockets=sockets,
        workload_start=workload_start,
        first_health=first_health,
        shell_device=shell_device,
        stop_timeout_s=options.stop_timeout_s,
        early_signal=lambda: signals.received,
    )
    asyncio.run(Agent(config, console, boot).run())
    if system:
        sync()
    return 0


def _init_started_ms() -> int | None:
    """When the init began (guest uptime, ms), if it passed ``VOLANT_INIT_STARTED_MS``.

    /proc/1/stat cannot tell: its start time is when the kernel created the init thread,
    before it unpacked the initramfs and exec'd /init.
    """
    value = os.environ.get("VOLANT_INIT_STARTED_MS", "")
    return int(value) if value.isdigit() else None


def _power_off(console: Console) -> None:
    """PID 1's only way out: sync, power off; if even that fails, wait forever."""
    console.log("syncing and powering off")
    try:
        sync()
        power_off()
    except Exception as error:
        console.log(f"power off failed: {error}; halting here")
    while True:
        signal.pause()
