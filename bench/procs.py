"""The child processes of a bench run, and what /proc says about them.

``Processes`` starts every child in its own session (so a Ctrl-C reaches the bench, which then
stops them in order) and stops each one, with its whole process group, however the run ends.
CPU time and memory are read from ``/proc``: a server's figure is the sum over the process
and its descendants (uvicorn or Node workers).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["Processes", "cpu_seconds", "descendants", "pss_mb", "rss_mb"]

_TICKS = os.sysconf("SC_CLK_TCK")


class Processes:
    """Every process the bench started and has not stopped yet."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        args: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        cpus: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` (on the CPUs ``cpus``, e.g. "0", via taskset), output to ``log_path``."""
        if cpus is not None:
            args = ["taskset", "-c", cpus, *args]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                list(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        self._running.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> resource.struct_rusage | None:
        """Wait for ``proc`` to exit by itself (stopping it after ``timeout``); its CPU usage."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                self._forget(proc)
                return usage
            time.sleep(0.05)
        self.stop(proc)
        return None

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout``."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Workers of a server that exited first may linger in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._forget(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self._running)):
            self.stop(proc)

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        if proc in self._running:
            self._running.remove(proc)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces; everything after its ')' splits cleanly.
    return raw[raw.rindex(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and its descendants, from /proc/<pid>/stat."""
    total = 0
    for pid in descendants(root):
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def rss_mb(root: int, *, tree: bool = False) -> float:
    """Resident memory (MB) of ``root``, or summed over its descendants (shared pages twice)."""
    total_kb = 0
    for pid in descendants(root) if tree else [root]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


def pss_mb(root: int) -> float:
    """Proportional memory (MB) of ``root`` and its descendants: pages shared between forked
    workers are divided among them, so the sum is what the server really holds."""
    total_kb = 0
    for pid in descendants(root):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024
