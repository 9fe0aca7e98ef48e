"""`kinmail serve`: bind every configured listener and run every service in one asyncio loop.

Each service lives in a module with `create(rt: Runtime) -> Service | None` (None when it has nothing to do,
e.g. its listen list is empty). SIGTERM and SIGINT stop within 5 s; SIGHUP reloads (as `kinmail reload`
asks, through the pid file `data_dir/state/kinmail.pid`).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
from pathlib import Path
from typing import Protocol

from kinmail.core.atomic import atomic_write
from kinmail.core.log import get_logger, setup_logging
from kinmail.runtime import Runtime

log = get_logger(__name__)

# In start order; stopped in reverse. The queue comes first so that listeners can hand it mail at once.
SERVICE_MODULES = (
    "kinmail.queue.service",
    "kinmail.smtpserver.service",
    "kinmail.imapserver.service",
    "kinmail.pop3server.service",
    "kinmail.managesieve.service",
)

STOP_TIMEOUT = 4.0


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def pid_file(rt: Runtime) -> Path:
    return rt.data_dir / "state" / "kinmail.pid"


async def run(rt: Runtime) -> None:
    """Start the services, wait for a stop signal, stop them."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    services: list[Service] = []
    for module_name in SERVICE_MODULES:
        module = importlib.import_module(module_name)
        service: Service | None = module.create(rt)
        if service is None:
            continue
        await service.start()
        services.append(service)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, rt.reload)
    atomic_write(pid_file(rt), f"{os.getpid()}\n")
    log.info("serve.ready", pid=os.getpid(), services=",".join(s.name for s in services))
    try:
        await stopping.wait()
    finally:
        log.info("serve.stopping")
        for service in reversed(services):
            try:
                await asyncio.wait_for(service.stop(), STOP_TIMEOUT / max(1, len(services)) + 0.5)
            except (TimeoutError, Exception):
                log.exception("serve.stop_failed", service=service.name)
        await asyncio.to_thread(rt.store.close)
        pid_file(rt).unlink(missing_ok=True)
        log.info("serve.stopped")


def serve(config_path: Path) -> None:
    """Load the configuration (raising ConfigError on problems) and run until stopped."""
    rt = Runtime.load(config_path)
    setup_logging(rt.config.log_level, rt.data_dir / "log")
    rt.warn_about_scripts()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(rt))
