"""Deployments: named groups of identical VMs that volantd keeps at a desired count.

A deployment's replicas are the VMs ``<deployment>-1`` … ``<deployment>-<desired>``, all made
from the deployment's configuration (a VM config document with the plugin manifest
snapshotted when the deployment was created). :meth:`DeploymentController.reconcile` makes the
VMs match it: missing indices are created and booted in the background, indices above the
desired count are stopped and deleted (highest first), and replicas that crashed or stopped
are booted again in place. Restarting, rather than deleting and re-creating, keeps a crashed
replica's serial log and identity for the post-mortem; a replica stopped by hand comes back
too (scale down to stop one for good). A replica that keeps failing is restarted after a
growing pause (2 s, 4 s, … 60 s) instead of in a tight loop; the pause resets once the replica
has been seen ready. A boot that does not reach a healthy workload within the ready timeout is
stopped and marked crashed by the orchestrator, so it is retried the same way.

The background loop reconciles every deployment every few seconds, and a deployment at once
when one of its replicas stops, crashes or is deleted.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pluginspec import Issue, SpecError
from volantd.errors import VolantError
from volantd.events import EventBus
from volantd.store import (
    ConflictError,
    Database,
    DeploymentRecord,
    EventRecord,
    NotFoundError,
    VMRecord,
)
from volantd.vms import states
from volantd.vms.naming import InvalidNameError, check_name
from volantd.vms.orchestrator import (
    DEFAULT_READY_TIMEOUT_S,
    CreateRequest,
    Orchestrator,
    VMError,
)

log = logging.getLogger("volantd.deployments")
T = TypeVar("T")

DEFAULT_INTERVAL_S = 5.0
RETRY_BASE_S = 2.0
RETRY_MAX_S = 60.0
MAX_NAME_LENGTH = 63
RESTARTED = frozenset({states.CRASHED, states.STOPPED})
"""Replica states that make reconcile boot the replica again."""


class DeploymentError(VolantError):
    """A deployment operation failed."""


class InvalidDeploymentError(DeploymentError):
    """The request is wrong; ``issues`` names each field (``name``, ``replicas``,
    ``config.<path>``) and what is wrong with it."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues = tuple(issues)
        super().__init__("; ".join(str(issue) for issue in self.issues))

    @classmethod
    def single(cls, path: str, message: str) -> InvalidDeploymentError:
        return cls([Issue(path, message)])


@dataclass(frozen=True)
class ReplicaView:
    name: str
    status: str
    ready: bool


@dataclass(frozen=True)
class DeploymentView:
    """A deployment as the API shows it: what is wanted, and how its replicas are doing."""

    name: str
    desired_replicas: int
    ready_replicas: int
    replicas: tuple[ReplicaView, ...]
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    last_error: str | None
    """What went wrong in the latest reconcile pass (None: nothing)."""


def replica_name(deployment: str, index: int) -> str:
    return f"{deployment}-{index}"


def replica_index(deployment: str, vm_name: str) -> int | None:
    """``n`` if ``vm_name`` is ``<deployment>-<n>`` (n ≥ 1, no leading zero), else None."""
    prefix = f"{deployment}-"
    rest = vm_name[len(prefix) :] if vm_name.startswith(prefix) else ""
    if rest.isascii() and rest.isdigit() and not rest.startswith("0"):
        return int(rest)
    return None


class DeploymentController:
    """Creates, scales and deletes deployments, and keeps their replicas at the desired count."""

    def __init__(
        self,
        db: Database,
        orchestrator: Orchestrator,
        bus: EventBus,
        *,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        max_parallel_boots: int | None = None,
    ) -> None:
        self.db = db
        self.orchestrator = orchestrator
        self.bus = bus
        self.ready_timeout_s = ready_timeout_s
        # Locks are kept after a deployment is deleted: a waiter may still hold the old one.
        self._locks: dict[str, asyncio.Lock] = {}
        self._boot_slots = asyncio.Semaphore(max_parallel_boots or max(2, os.cpu_count() or 2))
        self._booting: dict[str, asyncio.Task[None]] = {}  # replica name → its boot
        self._queued: set[str] = set()  # replicas whose boot waits for a slot
        self._retiring: set[str] = set()  # replicas being removed: their boot failing is fine
        self._retries: dict[str, tuple[int, float]] = {}  # replica → (failures, not before)
        self._last_error: dict[str, str] = {}
        self._due: set[str] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    # -- helpers ----------------------------------------------------------------------------

    async def _db(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(call, *args, **kwargs)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # -- requests ---------------------------------------------------------------------------

    async def create(self, name: str, replicas: int, config: dict[str, Any]) -> DeploymentView:
        """Store a new deployment (ConflictError if the name is taken) and reconcile it.

        ``config`` is a VM config document (``plugin`` at least); the plugin must be installed
        and enabled. Replicas boot in the background: poll :meth:`get` for ``ready_replicas``.
        """
        _check_name(name)
        _check_replicas(name, replicas)
        document = await self._db(self._resolve_config, name, config)
        await self._db(self._check_names_free, name, replicas)
        record = DeploymentRecord(name=name, desired_replicas=replicas, config=document)
        await self._db(self.db.deployments.add, record)
        await self.bus.publish(
            "DEPLOYMENT_CREATED",
            message=f"deployment {name} created with {replicas} replicas",
            data={"deployment": name, "replicas": replicas},
        )
        return await self.reconcile(name)

    async def scale(self, name: str, replicas: int) -> DeploymentView:
        """Change the desired replica count and reconcile at once (scale-down stops and
        deletes the highest indices before this returns; scale-up boots in the background)."""
        _check_replicas(name, replicas)
        async with self._lock(name):
            record = await self._db(self.db.deployments.get, name)
            before = record.desired_replicas
            if replicas != before:
                await self._db(self._check_names_free, name, replicas)
                record = await self._db(self.db.deployments.set_replicas, name, replicas)
                await self.bus.publish(
                    "DEPLOYMENT_SCALED",
                    message=f"deployment {name} scaled from {before} to {replicas}",
                    data={"deployment": name, "replicas": replicas},
                )
            return await self._reconcile(record)

    async def delete(self, name: str) -> None:
        """Stop and delete every replica, then the deployment.

        The desired count is set to 0 first, so a replica that cannot be deleted now is
        retried by the loop (and after a daemon restart); DeploymentError says which.
        """
        async with self._lock(name):
            record = await self._db(self.db.deployments.set_replicas, name, 0)
            await self._reconcile(record)
            left = await self._db(self.db.deployments.members, name)
            if left:
                names = ", ".join(vm.name for vm in left)
                raise DeploymentError(
                    f"deployment {name!r}: could not delete replicas {names} "
                    f"({self._last_error.get(name)}); it now wants 0 replicas and volantd "
                    "keeps trying; delete it again later"
                )
            await self._db(self.db.deployments.remove, name)
            self._last_error.pop(name, None)
        await self.bus.publish(
            "DEPLOYMENT_DELETED", message=f"deployment {name} deleted", data={"deployment": name}
        )

    async def get(self, name: str) -> DeploymentView:
        """The deployment called ``name``; NotFoundError if there is none."""
        record = await self._db(self.db.deployments.get, name)
        return await self._view(record)

    async def list(self) -> builtins.list[DeploymentView]:
        """Every deployment, by name."""
        records = await self._db(self.db.deployments.list)
        return [await self._view(record) for record in records]

    # -- reconciling ------------------------------------------------------------------------

    async def reconcile(self, name: str) -> DeploymentView:
        """Make the deployment's VMs match its desired count (see the module docstring);
        idempotent, and serialised per deployment. Failures of single replicas are logged
        and shown in the view's ``last_error``; NotFoundError if the deployment is gone."""
        async with self._lock(name):
            record = await self._db(self.db.deployments.get, name)
            return await self._reconcile(record)

    async def _reconcile(self, record: DeploymentRecord) -> DeploymentView:
        name = record.name
        problems: builtins.list[str] = []
        members = await self._db(self.db.deployments.members, name)
        wanted: dict[int, VMRecord] = {}
        for vm in sorted(members, key=lambda vm: -(replica_index(name, vm.name) or 0)):
            index = replica_index(name, vm.name)
            if index is not None and index <= record.desired_replicas:
                wanted[index] = vm
            else:  # scale-down (highest first), or a member that is no replica of it
                await self._attempt(problems, vm.name, self._remove(vm.name))
        has_workload = _has_workload(record.config)
        for index in range(1, record.desired_replicas + 1):
            replica = replica_name(name, index)
            current = wanted.get(index)
            if current is None:
                await self._attempt(problems, replica, self._add(record, replica))
            elif current.status in RESTARTED and replica not in self._queued:
                await self._attempt(problems, replica, self._restart(record, current))
            elif current.status == states.PENDING and replica not in self._booting:
                self._boot(name, replica)  # recorded, but its boot never began (daemon exit)
            elif _ready(current, has_workload):
                self._retries.pop(replica, None)
        error = "; ".join(problems)
        if not error:
            self._last_error.pop(name, None)
        elif self._last_error.get(name) != error:  # said once, not every pass
            log.warning("deployment %s: %s", name, error)
            self._last_error[name] = error
        return await self._view(record)

    async def _attempt(
        self, problems: builtins.list[str], replica: str, job: Awaitable[None]
    ) -> None:
        try:
            await job
        except (VolantError, SpecError) as error:
            problems.append(f"{replica}: {error}")
        except Exception as error:
            log.exception("replica %s: unexpected failure", replica)
            problems.append(f"{replica}: {error!r}")

    async def _add(self, record: DeploymentRecord, replica: str) -> None:
        request = CreateRequest(name=replica, config=record.config, deployment=record.name)
        await self.orchestrator.create(request, start=False)
        self._boot(record.name, replica)

    async def _restart(self, record: DeploymentRecord, vm: VMRecord) -> None:
        failures, not_before = self._retries.get(vm.name, (0, 0.0))
        now = time.monotonic()
        if now < not_before:
            times = f"{failures} time{'s' if failures > 1 else ''}"
            raise DeploymentError(
                f"{vm.status}: {vm.last_error or 'no error recorded'} (restarted {times}; "
                f"next try {_pause(failures):g} s after the last)"
            )
        failures += 1
        self._retries[vm.name] = (failures, now + _pause(failures))
        log.info("deployment %s: restarting replica %s (%s: %s)", record.name, vm.name,
                 vm.status, vm.last_error)  # fmt: skip
        self._boot(record.name, vm.name)

    async def _remove(self, replica: str) -> None:
        await self._delete_vm(replica)
        self._retries.pop(replica, None)

    async def _delete_vm(self, replica: str) -> None:
        self._retiring.add(replica)
        boot = self._booting.get(replica)
        if boot is not None and replica in self._queued:
            boot.cancel()  # still waiting for a boot slot: nothing launched yet
        try:
            await self.orchestrator.delete(replica)
            if boot is not None:  # it ends promptly now that the VM is gone
                await asyncio.wait({boot}, timeout=10)
        finally:
            self._retiring.discard(replica)

    def _boot(self, deployment: str, replica: str) -> None:
        self._queued.add(replica)
        task = asyncio.ensure_future(self._boot_replica(deployment, replica))
        self._booting[replica] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._booting.get(replica) is done:
                del self._booting[replica]
                self._queued.discard(replica)

        task.add_done_callback(forget)

    async def _boot_replica(self, deployment: str, replica: str) -> None:
        """Boot until the workload is healthy, at most ``max_parallel_boots`` at a time; past
        the ready timeout the orchestrator stops the VM and marks it crashed, and the next
        reconcile restarts it."""
        try:
            async with self._boot_slots:
                self._queued.discard(replica)
                await self.orchestrator.start(
                    replica, wait="healthy", timeout_s=self.ready_timeout_s
                )
        except (VolantError, SpecError) as error:
            if replica in self._retiring or isinstance(error, NotFoundError):
                log.debug("replica %s removed while it booted: %s", replica, error)
            elif isinstance(error, ConflictError):  # someone else started it meanwhile
                log.debug("replica %s not booted: %s", replica, error)
            else:
                log.warning("deployment %s: replica %s did not come up: %s", deployment,
                            replica, error)  # fmt: skip
        except Exception:
            log.exception("deployment %s: booting replica %s failed", deployment, replica)

    # -- request checks ---------------------------------------------------------------------

    def _resolve_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """The stored template: ``config`` checked the way VM creation checks it, with the
        plugin's manifest snapshotted so every replica runs the same one."""
        plugin = config.get("plugin")
        if not isinstance(plugin, str) or not plugin:
            raise InvalidDeploymentError.single("config.plugin", "name the plugin to run")
        request = CreateRequest(name=replica_name(name, 1), config=config, deployment=name)
        try:
            resolved = self.orchestrator.resolve_config(request)
        except SpecError as error:
            raise InvalidDeploymentError(
                Issue(f"config.{issue.path}" if issue.path else "config", issue.message)
                for issue in error.issues
            ) from None
        except VMError as error:
            raise InvalidDeploymentError.single("config", str(error)) from None
        return resolved.model_dump(mode="json")

    def _check_names_free(self, name: str, replicas: int) -> None:
        """ConflictError if a VM outside the deployment holds one of its replica names."""
        for index in range(1, replicas + 1):
            vm = self.db.vms.find(replica_name(name, index))
            if vm is not None and vm.deployment != name:
                owner = f"deployment {vm.deployment!r}" if vm.deployment else "no deployment"
                raise ConflictError(
                    f"vm {vm.name!r} already exists and belongs to {owner}; delete or rename "
                    f"it, or choose another deployment name or replica count"
                )

    # -- views ------------------------------------------------------------------------------

    async def _view(self, record: DeploymentRecord) -> DeploymentView:
        members = await self._db(self.db.deployments.members, record.name)
        has_workload = _has_workload(record.config)
        members.sort(key=lambda vm: (replica_index(record.name, vm.name) or 0, vm.name))
        replicas = tuple(
            ReplicaView(vm.name, vm.status, _ready(vm, has_workload)) for vm in members
        )
        return DeploymentView(
            name=record.name,
            desired_replicas=record.desired_replicas,
            ready_replicas=sum(replica.ready for replica in replicas),
            replicas=replicas,
            config=record.config,
            created_at=record.created_at,
            updated_at=record.updated_at,
            last_error=self._last_error.get(record.name),
        )

    # -- the loop ---------------------------------------------------------------------------

    def start(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        """Run :meth:`run` in the background until :meth:`close`."""
        if self._loop is None or self._loop.done():
            self._loop = asyncio.ensure_future(self.run(interval_s))

    async def run(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        """Reconcile every deployment now and every ``interval_s``, and a deployment as soon
        as one of its replicas stops, crashes or is deleted; until cancelled."""
        watcher = asyncio.ensure_future(self._follow_replicas())
        loop = asyncio.get_running_loop()
        try:
            while True:
                for record in await self._db(self.db.deployments.list):
                    await self._reconcile_quietly(record.name)
                deadline = loop.time() + interval_s
                while (left := deadline - loop.time()) > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), left)
                    self._wake.clear()
                    due, self._due = self._due, set()
                    for name in sorted(due):
                        await self._reconcile_quietly(name)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _reconcile_quietly(self, name: str) -> None:
        try:
            await self.reconcile(name)
        except NotFoundError:
            pass  # deleted meanwhile
        except Exception:
            log.exception("deployment %s: reconcile failed", name)

    async def _follow_replicas(self) -> None:
        """Mark a deployment due when one of its replicas stops, crashes or is deleted."""
        after: int | None = None
        while True:
            try:
                async for event in self.bus.follow(after):
                    after = event.id
                    try:
                        deployment = await self._deployment_to_check(event)
                    except Exception:
                        log.exception("deployments: cannot tell whose VM event %s is", event.id)
                        continue
                    if deployment is not None:
                        self._due.add(deployment)
                        self._wake.set()
                return  # the bus closed: the daemon is exiting
            except Exception:
                log.exception("deployments: following VM events failed; again in 1 s")
                await asyncio.sleep(1)

    async def _deployment_to_check(self, event: EventRecord) -> str | None:
        if event.vm_name is None:
            return None
        if event.type == "VM_STATE" and event.status in RESTARTED:
            vm = await self._db(self.db.vms.find, event.vm_name)
            return vm.deployment if vm is not None else None
        if event.type == "VM_DELETED":  # the record is gone: go by the name
            deployment = event.vm_name.rpartition("-")[0]
            if deployment and replica_index(deployment, event.vm_name) is not None:
                return deployment
        return None

    async def close(self) -> None:
        """Stop the loop and the boots in flight (the VMs themselves keep running)."""
        tasks: builtins.list[asyncio.Task[None]] = list(self._booting.values())
        if self._loop is not None:
            tasks.append(self._loop)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = None


def _pause(failures: int) -> float:
    """How long after its ``failures``-th restart a failing replica is restarted again."""
    return min(RETRY_BASE_S * 2.0 ** (failures - 1), RETRY_MAX_S)


def _ready(vm: VMRecord, has_workload: bool) -> bool:
    if vm.status != states.RUNNING:
        return False
    return not has_workload or "workload_healthy" in ((vm.boot or {}).get("steps") or {})


def _has_workload(config: dict[str, Any]) -> bool:
    return (config.get("manifest") or {}).get("workload") is not None


def _check_name(name: str) -> None:
    try:
        check_name(name, "deployment")
    except InvalidNameError as error:
        raise InvalidDeploymentError.single("name", str(error)) from None


def _check_replicas(name: str, replicas: int) -> None:
    if replicas < 0:
        raise InvalidDeploymentError.single("replicas", f"must be 0 or more, got {replicas}")
    longest = replica_name(name, max(replicas, 1))
    if len(longest) > MAX_NAME_LENGTH:
        raise InvalidDeploymentError.single(
            "name" if len(replica_name(name, 1)) > MAX_NAME_LENGTH else "replicas",
            f"replica name {longest!r} would be longer than {MAX_NAME_LENGTH} characters; "
            "use a shorter deployment name",
        )


__all__ = [
    "DeploymentController",
    "DeploymentError",
    "DeploymentView",
    "InvalidDeploymentError",
    "ReplicaView",
    "replica_index",
    "replica_name",
]
