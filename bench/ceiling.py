"""The ceiling: how many RSA-2048 signatures per second OpenSSL makes on the same cores.

Every credential tokensmith issues costs one RSA-2048 PKCS#1 v1.5 signature, so
``openssl speed rsa2048`` is the most a server could reach with nothing else to do. One run
gives two figures, read from its machine-readable lines (``-mr``: ``+R1:count:bits:seconds``,
where seconds is the user CPU time OpenSSL divides by by default):

- ``wall``: signatures per wall-clock second (count over the ``-seconds`` the loop ran), to
  compare with wrk's requests per second;
- ``cpu``: signatures per CPU second, to compare with a server's CPU time per request (its
  utime + stime): a ratio that holds even when other processes take turns on the same core.
  Only for a single process: with ``-multi`` OpenSSL 3.0 reports wall-clock time per child.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess

__all__ = ["Ceiling", "rsa2048"]

_SIGN = re.compile(r"^\+R1:(\d+):2048:([0-9.]+)\s*$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Ceiling:
    wall: float  # RSA-2048 signatures per wall-clock second, all processes together
    cpu: float | None  # per CPU second (single process only)


def rsa2048(seconds: int, *, multi: int = 1, cpus: str | None = None) -> Ceiling:
    """``openssl speed -mr -seconds N rsa2048``, on ``cpus`` (taskset) or ``-multi`` at once."""
    args = ["openssl", "speed", "-mr", "-seconds", str(seconds)]
    if multi > 1:
        args += ["-multi", str(multi)]
    args.append("rsa2048")
    if cpus is not None:
        args = ["taskset", "-c", cpus, *args]
    # openssl times signing, then verifying: twice ``seconds``, plus key setup.
    done = subprocess.run(args, capture_output=True, text=True, timeout=4 * seconds + 60)
    # The children of -multi report on stderr; a single process on stdout.
    rows = [(int(n), float(t)) for n, t in _SIGN.findall(done.stdout + "\n" + done.stderr)]
    if done.returncode != 0 or len(rows) < multi:
        raise RuntimeError(f"openssl speed failed:\n{done.stdout[-1000:]}{done.stderr[-1000:]}")
    rows = rows[-multi:]
    return Ceiling(
        wall=sum(count for count, _ in rows) / seconds,
        cpu=rows[0][0] / rows[0][1] if multi == 1 and rows[0][1] > 0 else None,
    )
