"""Settings: one frozen value built from command-line flags and ``TOKENSMITH_*`` variables.

This module is the only reader of the process environment. Precedence: an explicit flag wins
over ``TOKENSMITH_<NAME>``, which wins over the default. Nothing reads configuration at import
time; the composition root (``tokensmith.main``) builds one ``Settings`` and passes it down.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_ISSUER", "Settings", "load_settings"]

DEFAULT_ISSUER = "https://accounts.google.com"


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".tokensmith")
    host: str = "127.0.0.1"
    port: int = 8080
    project: str = "tokensmith-local"
    owner_email: str = "owner@tokensmith.local"
    database: str = ""  # empty: SQLite file inside data_dir
    issuer: str = DEFAULT_ISSUER
    public_url: str = ""  # empty: http://host:port
    kek_file: str = ""  # empty: data_dir/kek.key, generated on first start
    kek: str = ""  # base64 key-encryption key given directly (takes precedence over kek_file)
    max_body_bytes: int = 1 << 20
    log_level: str = "info"
    workers: int = 0  # processes serving requests; 0: one per CPU core
    # The metadata server (tokensmith.metadata): one listener on metadata_port (0: none),
    # plus the instances listed in the metadata_config file (JSON or TOML).
    metadata_port: int = 0
    metadata_host: str = "127.0.0.1"
    metadata_service_account: str = ""  # empty: the project's default compute account
    metadata_config: str = ""
    # The HTTPS proxy (tokensmith.proxy) for clients whose Google hosts are hard-coded:
    # proxy_port 0 = off; proxy_domains = comma-separated extra (universe) domains it serves.
    proxy_port: int = 0
    proxy_host: str = "127.0.0.1"
    proxy_domains: str = ""

    @property
    def database_url(self) -> str:
        if self.database:
            return self.database
        return f"sqlite:///{(self.data_dir / 'tokensmith.db').resolve()}"

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else max(1, os.cpu_count() or 1)

    @property
    def base_url(self) -> str:
        """The URL clients reach this server at (token_uri and key-file links derive from it)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def kek_path(self) -> Path:
        return Path(self.kek_file) if self.kek_file else self.data_dir / "kek.key"

    @property
    def credentials_dir(self) -> Path:
        return self.data_dir / "credentials"


_INT_FIELDS = {"port", "max_body_bytes", "metadata_port", "workers", "proxy_port"}


def load_settings(
    flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Merge flags (``None`` means "not given") over ``TOKENSMITH_*`` variables over defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        raw = env.get(f"TOKENSMITH_{field.name.upper()}")
        if raw is not None and raw != "":
            values[field.name] = _coerce(field.name, raw)
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _coerce(name, value)
    return Settings(**values)


def _coerce(name: str, value: Any) -> Any:
    if name == "data_dir":
        return Path(value)
    if name in _INT_FIELDS:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an integer, got {value!r}") from None
    return str(value)
