"""`volar vms logs|exec|cp`: the guest agent (kestrel) behind ``/api/v1/vms/NAME/...``.

Exit status as everywhere (0 ok, 1 error, 2 usage error), except ``exec``, which exits with the
command's status (124: it timed out; 128+N: killed by signal N; 130: interrupted).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, TextIO

import typer

from volar.client import APIError
from volar.commands.vms import vms_app
from volar.context import STREAMING, OutputOption, client, fail, interruptible, usage_error, vm_path
from volar.output import Format, emit


def _write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


@vms_app.command("logs")
def vms_logs(
    name: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing new lines until Ctrl-C")
    ] = False,
    tail: Annotated[
        str | None, typer.Option(help="the last N lines, or 'all' (default 1000)")
    ] = None,
    stream: Annotated[str | None, typer.Option(help="only stdout or only stderr")] = None,
    timestamps: Annotated[
        bool, typer.Option("--timestamps", "-t", help="prefix each line with its time")
    ] = False,
    output: OutputOption = Format.TABLE,
) -> None:
    """The workload's output (kept by the guest agent).

    Lines the workload wrote to stderr go to stderr. With -f, Ctrl-C ends the follow with exit
    status 0; -o json then prints one JSON object per line.
    """
    params: dict[str, str] = {}
    if tail is not None:
        if tail != "all" and not tail.isdigit():
            usage_error(f"--tail must be a number of lines or 'all' (got {tail!r})")
        params["tail"] = tail
    if stream is not None:
        if stream not in ("stdout", "stderr"):
            usage_error(f"--stream must be stdout or stderr (got {stream!r})")
        params["stream"] = stream
    path = vm_path(name, "/logs")
    if not follow:
        body = client().get(path, params=params)
        if output is not Format.TABLE:
            emit(body, output)
            return
        with interruptible(0):
            for entry in body.get("lines", []):
                _print_log_line(entry, timestamps, output)
        return
    if output is Format.YAML:
        usage_error("-o yaml cannot follow; use -o json (one JSON object per line)")
    params["follow"] = "1"
    with (
        interruptible(0),
        client().stream("GET", path, params=params, timeout=STREAMING) as response,
    ):
        for line in response.iter_lines():
            if line.strip():
                _print_log_line(json.loads(line), timestamps, output)


def _print_log_line(entry: dict[str, Any], timestamps: bool, output: Format) -> None:
    if output is Format.JSON:
        _write(sys.stdout, json.dumps(entry) + "\n")
        return
    prefix = f"{entry.get('time', '')} " if timestamps else ""
    target = sys.stderr if entry.get("stream") == "stderr" else sys.stdout
    _write(target, f"{prefix}{entry.get('line', '')}\n")


@vms_app.command("exec")
def vms_exec(
    name: str,
    command: Annotated[list[str], typer.Argument(metavar="-- COMMAND...", show_default=False)],
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE (repeatable)")
    ] = None,
    workdir: Annotated[
        str | None, typer.Option("--workdir", "-w", help="absolute guest directory (default /)")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0.001, help="kill it after this many seconds")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="user, uid, user:group or uid:gid")
    ] = None,
    stdin: Annotated[
        bool, typer.Option("--stdin", "-i", help="send this command's stdin (text) to it")
    ] = False,
) -> None:
    """Run a command in the guest and exit with its exit status.

    Its output is streamed to stdout and stderr. Exit status 124: it timed out; 128+N: signal
    N killed it. Options go before `--`: volar vms exec web-1 --env A=1 -- sh -c 'echo $A'
    """
    body: dict[str, Any] = {"cmd": command}
    if env:
        pairs = [item.partition("=") for item in env]
        if any(not key or not sep for key, sep, _ in pairs):
            usage_error("--env takes KEY=VALUE")
        body["env"] = {key: value for key, _, value in pairs}
    if workdir is not None:
        body["cwd"] = workdir
    if timeout is not None:
        body["timeout_s"] = timeout
    if user is not None:
        body["user"] = user
    if stdin:
        body["stdin"] = sys.stdin.read()
    result: dict[str, Any] | None = None
    with (
        interruptible(130),
        client().stream(
            "POST", vm_path(name, "/exec"), params={"stream": "1"}, json=body, timeout=STREAMING
        ) as response,
    ):
        for line in response.iter_lines():
            if not line.strip():
                continue
            item = json.loads(line)
            if "exit_code" in item:
                result = item
            else:
                _write(sys.stderr if item.get("stream") == "stderr" else sys.stdout, item["data"])
    if result is None:
        fail(f"the output of the command in vm {name} ended before its exit status")
    if result.get("timed_out"):
        typer.echo(f"error: the command timed out after {timeout:g} s and was killed", err=True)
        raise typer.Exit(124)
    code = int(result["exit_code"])
    raise typer.Exit(128 - code if code < 0 else code)


def _split_location(argument: str) -> tuple[str | None, str]:
    """``VM:/path`` → (VM, /path); a local path (or ``-``) → (None, path). Paths starting
    with ``/`` or ``.`` are always local, so ``./a:b`` names a local file."""
    if argument == "-" or argument.startswith(("/", ".", "~")):
        return None, argument
    vm, sep, path = argument.partition(":")
    if sep and vm and "/" not in vm:
        return vm, path
    return None, argument


@vms_app.command("cp")
def vms_cp(
    source: Annotated[str, typer.Argument(metavar="SRC")],
    destination: Annotated[str, typer.Argument(metavar="DST")],
) -> None:
    """Copy one file between this machine and a VM (VM:/guest/path).

    The other side is a local path, or - for stdin/stdout. The file's mode travels with it. A
    destination that is a directory (or ends in /) receives the file under its own name.
    """
    source_vm, source_path = _split_location(source)
    dest_vm, dest_path = _split_location(destination)
    if source_vm and dest_vm:
        usage_error("cannot copy from one VM to another: one side must be a local path")
    if not source_vm and not dest_vm:
        usage_error("one side must be a VM path, VM:/path (e.g. web-1:/etc/hostname)")
    guest = source_path if source_vm else dest_path
    if not guest.startswith("/"):
        usage_error(f"the guest path must be absolute (got {guest!r})")
    with interruptible(130):
        if source_vm:
            _download(source_vm, source_path, dest_path)
        else:
            assert dest_vm is not None
            _upload(source_path, dest_vm, dest_path)


def _download(vm: str, guest: str, local: str) -> None:
    path = vm_path(vm, "/files")
    if local == "-":
        with client().stream("GET", path, params={"path": guest}, timeout=STREAMING) as response:
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        return
    target = Path(local)
    if target.is_dir() or local.endswith("/"):
        target = target / PurePosixPath(guest).name
    if not target.parent.is_dir():
        fail(f"cannot write {target}: no such directory {target.parent}")
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed or removed below
            dir=target.parent, prefix=f".{target.name}.", suffix=".volar", delete=False
        )
    except OSError as error:
        fail(f"cannot write in {target.parent}: {error.strerror or error}")
    size = 0
    try:
        with handle, client().stream("GET", path, params={"path": guest},
                                     timeout=STREAMING) as response:  # fmt: skip
            for chunk in response.iter_bytes():
                handle.write(chunk)
                size += len(chunk)
            mode = response.headers.get("x-file-mode")
        if mode:
            os.chmod(handle.name, int(mode, 8))
        os.replace(handle.name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise
    typer.echo(f"copied {size} bytes from {vm}:{guest} to {target}")


def _upload(local: str, vm: str, guest: str) -> None:
    path = vm_path(vm, "/files")
    if local == "-":
        data = sys.stdin.buffer.read()
        written = client().request("PUT", path, params={"path": guest}, content=data).json()
        typer.echo(f"copied {written['size']} bytes to {vm}:{written['path']}")
        return
    source = Path(local)
    try:
        info = source.stat()
    except FileNotFoundError:
        fail(f"no such file: {local}")
    except OSError as error:
        fail(f"cannot read {local}: {error.strerror or error}")
    if stat.S_ISDIR(info.st_mode):
        fail(f"{local} is a directory: cp copies one file at a time")
    if not stat.S_ISREG(info.st_mode):
        fail(f"{local} is not a regular file")
    if guest.endswith("/"):
        guest += source.name
    params = {"path": guest, "mode": f"{stat.S_IMODE(info.st_mode):04o}"}
    try:
        written = _put_file(path, source, params)
    except APIError as error:
        # Like cp(1): a directory as the destination receives the file under its own name.
        if error.status != 400 or "is a directory" not in str(error):
            raise
        params["path"] = guest.rstrip("/") + "/" + source.name
        written = _put_file(path, source, params)
    typer.echo(f"copied {written['size']} bytes to {vm}:{written['path']}")


def _put_file(path: str, source: Path, params: dict[str, str]) -> dict[str, Any]:
    try:
        with source.open("rb") as file:
            written: dict[str, Any] = (
                client().request("PUT", path, params=params, content=file).json()
            )
    except PermissionError:
        fail(f"cannot read {source}: permission denied")
    return written
