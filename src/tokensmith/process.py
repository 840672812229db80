"""The server process: listening sockets, the event loop, and worker processes.

``bind`` opens sockets before anything is announced; ``run_listeners`` serves several ASGI
apps in one uvloop event loop with one SIGTERM/SIGINT handler; ``supervise`` runs N forked
worker processes on the same inherited sockets (the kernel spreads connections), forwards the
stop signals, restarts a worker that crashes, and returns when every worker has exited.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

__all__ = ["Listener", "bind", "run_listeners", "supervise"]

log = logging.getLogger("tokensmith")


def bind(host: str, port: int, option: str = "--port") -> socket.socket:
    """A listening socket, bound before anything is announced; a clear error if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(
                f"{host}:{port} is already in use (choose another port with {option} or "
                f"TOKENSMITH_{option[2:].upper().replace('-', '_')})"
            ) from None
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclasses.dataclass(frozen=True)
class Listener:
    """One HTTP listener of the process: a name for the logs, an ASGI app, a bound socket."""

    name: str
    app: Any
    sock: socket.socket
    on_stop: Callable[[], None] | None = None  # called at shutdown (releases hanging requests)
    server_header: bool = True  # uvicorn's "server: uvicorn" (the metadata server sends its own)


def run_listeners(
    listeners: list[Listener],
    log_level: str,
    background: Sequence[Callable[[], Awaitable[None]]] = (),
) -> None:
    """Serve every listener in one event loop until SIGTERM or SIGINT, then shut down cleanly.

    ``background`` coroutines (the HTTPS proxy) run in the same loop until the servers stop.

    uvicorn's own signal handling re-raises the caught signal after shutdown (so the process
    would die by it, skipping our cleanup); here one handler asks every server to exit and the
    process returns normally.
    """
    import asyncio

    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # signals are handled once for all servers, below

    servers = [
        _Server(
            uvicorn.Config(
                listener.app,
                log_level=log_level,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=5,
                server_header=listener.server_header,
            )
        )
        for listener in listeners
    ]

    def stop(_signum: int, _frame: object) -> None:
        for server in servers:
            server.should_exit = True
        for listener in listeners:
            if listener.on_stop is not None:
                listener.on_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve_all(servers, listeners, background))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _loop_factory() -> Any:
    """uvloop's event loop where installed (it is, with uvicorn[standard]): measurably faster."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return None
    return uvloop.new_event_loop


async def _serve_all(
    servers: list[Any],
    listeners: list[Listener],
    background: Sequence[Callable[[], Awaitable[None]]] = (),
) -> None:
    import asyncio

    def failed(task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("a listener failed; stopping", exc_info=task.exception())
            for server in servers:
                server.should_exit = True

    tasks = [asyncio.ensure_future(start()) for start in background]
    for task in tasks:
        task.add_done_callback(failed)
    try:
        await asyncio.gather(
            *(
                server.serve(sockets=[listener.sock])
                for server, listener in zip(servers, listeners, strict=True)
            )
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


_PR_SET_PDEATHSIG = 1
_MAX_RESTARTS_PER_MINUTE = 5


def _die_with_parent() -> None:
    """Linux: deliver SIGTERM to this worker when the supervisor dies (even by SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _spawn(index: int, child: Callable[[int], int]) -> int:
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            _die_with_parent()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = child(index)
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            os._exit(code)
    return pid


def supervise(workers: int, child: Callable[[int], int]) -> int:
    """Fork ``workers`` processes running ``child(index)``; return once all have stopped.

    Call it with no other thread running (fork copies only the calling thread).
    """
    stopping = False
    pids: dict[int, int] = {}

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    restarts: list[float] = []
    worst = 0
    try:
        for index in range(workers):
            pids[_spawn(index, child)] = index
        while pids:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries os.wait
                continue
            index = pids.pop(pid, -1)
            code = os.waitstatus_to_exitcode(status)
            if stopping or index < 0:
                worst = max(worst, code if code > 0 else 0)
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            if len(restarts) > _MAX_RESTARTS_PER_MINUTE:
                log.error("workers keep failing (last exit %d); stopping", code)
                stop(signal.SIGTERM, None)
                worst = max(worst, 1)
                continue
            log.warning("worker %d exited with %d; starting a new one", index, code)
            pids[_spawn(index, child)] = index
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return worst
