"""What running metadata listeners need besides the app: a bound socket, a watched config.

Each instance listens on a socket of its own, bound before anything is announced (a taken port
is a clean start-up error); ``tokensmith.main.run_listeners`` serves them in one event loop with
the API (``serve``) or alone (the agent), calling ``MetadataServer.stop`` at shutdown so that
hanging GETs answer at once instead of holding the shutdown.

With ``--metadata-config``, the file is watched while the server runs: new attributes,
project attributes, tags and scopes are served at once (waking ``wait_for_change`` requests);
other changes are refused with a warning until a restart.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from tokensmith.metadata.instance import ConfigError, Instance, InstanceSpec, load_instances
from tokensmith.metadata.server import MetadataServer

__all__ = ["apply_specs", "bind_instance", "watch_config"]

log = logging.getLogger("tokensmith.metadata")

WATCH_INTERVAL = 0.5


def bind_instance(instance: Instance) -> socket.socket:
    """The instance's listening socket, bound now; a clear ``OSError`` if it cannot be."""
    host, port = instance.spec.host, instance.spec.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(
                f"{host}:{port} is already in use (metadata instance {instance.name}: choose "
                "another metadata port)"
            ) from None
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def watch_config(
    path: str | Path, servers: Sequence[MetadataServer], *, interval: float = WATCH_INTERVAL
) -> threading.Event:
    """Apply edits of the settings file to the running servers; set the event to stop."""
    stop = threading.Event()
    by_address = {(s.instance.spec.host, s.instance.spec.port): s for s in servers}

    def changed(last: int) -> int:
        with contextlib.suppress(OSError):
            return Path(path).stat().st_mtime_ns
        return last

    def loop() -> None:
        seen = changed(0)
        while not stop.wait(interval):
            current = changed(seen)
            if current == seen:
                continue
            seen = current
            try:
                specs = load_instances(path)
            except ConfigError as exc:
                log.warning("metadata config not reloaded: %s", exc)
                continue
            apply_specs(specs, by_address)

    threading.Thread(target=loop, name="tokensmith-metadata-config", daemon=True).start()
    return stop


def apply_specs(
    specs: Sequence[InstanceSpec], by_address: dict[tuple[str, int], MetadataServer]
) -> None:
    for spec in specs:
        server = by_address.get((spec.host, spec.port))
        if server is None:
            log.warning(
                "metadata config: no running instance on %s:%s; restart to add one",
                spec.host,
                spec.port,
            )
            continue
        try:
            server.update(spec)
        except ConfigError as exc:
            log.warning("metadata config: %s", exc)
        else:
            log.info("metadata config reloaded for instance %s", spec.name)
