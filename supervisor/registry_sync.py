"""Keeping one supervisor in step with a shared registry: notifications, a periodic reconcile, a heartbeat.

    LISTEN cloaca_registry ──(tenant, name)──▶ dirty ──▶ PackageHost.sync(tenant, name)
    every reconcile_interval, and after every (re)connection ──▶ every package of the registry or of this host
    every lease/3 ──▶ membership renewed; runs and fires of dead supervisors lost; schedule leases renewed

Every supervisor that records a change (an upload, a replacement, an unload)
sends a NOTIFY in the same transaction; each supervisor, the sender included,
hears it once it commits and makes its own state agree with the registry
through the same load path an upload takes (the new sandbox is ready before
calls move to it). Notifications can be missed (the listening connection
broke, the database restarted): the reconcile compares everything, at every
reconnection and every `reconcile_interval` seconds, so a missed one costs at
most that long. A supervisor that starts late, or comes back after a crash,
loads what the registry holds before it reports SERVING, then stays in step the
same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Awaitable, Callable

from supervisor.registry.postgres import CHANNEL, PostgresRegistry

if TYPE_CHECKING:
    from supervisor.tenants import Key, PackageHost

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0  # after a failed sync, how soon everything is compared again
MAX_BACKOFF = 10.0
SYNCS_AT_ONCE = 4


class RegistrySync:
    def __init__(self, host: PackageHost, registry: PostgresRegistry, reconcile_interval: float) -> None:
        self.host = host
        self.registry = registry
        self.reconcile_interval = reconcile_interval
        self.heartbeat_interval = registry.membership.lease_seconds / 3
        self._dirty: set[Key] = set()
        self._everything = True  # the first round compares everything
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()  # set while notifications arrive

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen(), name="registry-listen"),
                       loop.create_task(self._apply(), name="registry-sync"),
                       loop.create_task(self._every(self.reconcile_interval, self._reconcile), name="registry-reconcile"),
                       loop.create_task(self._every(self.heartbeat_interval, self._heartbeat), name="registry-heartbeat")]

    def reconcile(self) -> None:
        """Compare every package with the registry soon."""
        self._everything = True
        self._wake.set()

    def changed(self, tenant: str, name: str) -> None:
        self._dirty.add((tenant, name))
        self._wake.set()

    # --- hearing of changes -------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                connection = await self.registry.database.connect_async(autocommit=True)
                async with connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self.reconcile()  # whatever changed while nobody listened
                    backoff = 0.5
                    async for notification in connection.notifies():
                        try:
                            change = json.loads(notification.payload)
                            self.changed(str(change["tenant"]), str(change["name"]))
                        except (ValueError, KeyError, TypeError):
                            log.warning("ignored a registry notification that is not ours: %.200r",
                                        notification.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the listener must outlive the database's restarts
                log.warning("registry notifications interrupted (%s); listening again in %gs", exc, backoff)
            self.listening.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    # --- acting on them -----------------------------------------------------------------

    async def _apply(self) -> None:
        limit = asyncio.Semaphore(SYNCS_AT_ONCE)
        while True:
            await self._wake.wait()
            self._wake.clear()
            keys, self._dirty = self._dirty, set()
            if self._everything:
                self._everything = False
                try:
                    entries = await self.host._in_thread(self.registry.loaded)
                except Exception as exc:  # noqa: BLE001 - tried again shortly
                    log.warning("could not read the registry to reconcile (%s); trying again in %gs", exc,
                                RETRY_SECONDS)
                    self._retry_everything()
                    continue
                keys |= {(entry.tenant, entry.name) for entry in entries} | self.host.registry_packages()

            async def sync_one(key: Key) -> None:
                async with limit:
                    try:
                        await self.host.sync(*key)
                    except Exception as exc:  # noqa: BLE001 - one package's trouble stops no other's
                        log.warning("could not bring %s/%s in step with the registry (%s); trying again in %gs",
                                    key[0], key[1], exc, RETRY_SECONDS)
                        self._retry_everything()

            await asyncio.gather(*(sync_one(key) for key in sorted(keys)))

    def _retry_everything(self) -> None:
        asyncio.get_running_loop().call_later(RETRY_SECONDS, self.reconcile)

    async def _reconcile(self) -> None:
        self.reconcile()

    # --- being counted alive ----------------------------------------------------------------

    async def _heartbeat(self) -> None:
        await self.host._in_thread(self.registry.membership.renew)
        lost = await self.host._in_thread(self.host.runs.recover)
        if lost:
            log.warning("%d workflow run(s) of supervisors that stopped were recorded as lost", lost)
        if self.host.schedules_started:
            await self.host.schedules.renew_leases(self.host.ready_packages())

    @staticmethod
    async def _every(seconds: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await action()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("registry upkeep failed (%s); trying again in %gs", exc, seconds)
            await asyncio.sleep(seconds)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
