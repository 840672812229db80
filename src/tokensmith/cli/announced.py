"""Where the server running on a data directory listens, from its ``DATA_DIR/server.json``."""

from __future__ import annotations

import json
from pathlib import Path

from tokensmith.client.errors import ClientError

__all__ = ["announced_api"]


def announced_api(data_dir: Path) -> str | None:
    """The API URL the server on ``data_dir`` announced; None when no server wrote one."""
    announced = data_dir / "server.json"
    try:
        info = json.loads(announced.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read {announced} ({exc}); pass --server URL") from None
    api = info.get("api") if isinstance(info, dict) else None
    if not isinstance(api, str) or not api:
        raise ClientError(f"{announced} names no 'api' URL; pass --server URL")
    return api
