"""``tokensmith metadata`` (the stand-alone metadata agent) and the ``--metadata-*`` options of
``tokensmith serve``.

``tokensmith env`` (``cli/env.py``) points Google's clients at a metadata listener: Python's
google-auth needs ``GCE_METADATA_HOST`` and ``GCE_METADATA_IP``, gcloud ``GCE_METADATA_ROOT``;
Node needs no ``METADATA_SERVER_DETECTION``, since its detection ping (``GET
/computeMetadata/v1/instance``) is answered with ``Metadata-Flavor: Google`` (COMPAT.md §1b).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from tokensmith.cli import env as env_command

__all__ = ["register"]

_SERVE_OPTIONS = [
    click.Option(
        ["--metadata-port"],
        type=int,
        default=None,
        help="Also serve a metadata server (metadata.google.internal) on this port "
        "(TOKENSMITH_METADATA_PORT).",
    ),
    click.Option(
        ["--metadata-host"],
        default=None,
        help="Address of the metadata listener (default 127.0.0.1; it trusts whoever reaches it).",
    ),
    click.Option(
        ["--metadata-service-account"],
        default=None,
        help="Account attached to the metadata instance (default: the project's "
        "PROJECT_NUMBER-compute@developer.gserviceaccount.com).",
    ),
    click.Option(
        ["--metadata-config"],
        type=click.Path(dir_okay=False),
        default=None,
        help="JSON or TOML file listing metadata instances (port, service_account, name, zone, "
        "attributes, scopes, ...); watched for attribute changes.",
    ),
]


@click.command("metadata")
@click.option("--server", required=True, help="URL of the tokensmith server that mints tokens.")
@click.option(
    "--credentials",
    required=True,
    type=click.Path(dir_okay=False),
    help="The agent's own key file (it needs TokenCreator on the attached account).",
)
@click.option("--service-account", default=None, help="Email of the attached service account.")
@click.option("--port", type=int, default=None, help="Port of the metadata listener.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address of the listener.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON or TOML file listing instances (each with port and service_account).",
)
@click.option("--project-id", default="", help="Project id (default: read from the server).")
@click.option("--project-number", default="", help="Project number (default: from the server).")
@click.option(
    "--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"])
)
def metadata(
    server: str,
    credentials: str,
    service_account: str | None,
    port: int | None,
    host: str,
    config_file: str | None,
    project_id: str,
    project_number: str,
    log_level: str,
) -> None:
    """Run a metadata server on its own, minting through a remote tokensmith server."""
    import logging

    from tokensmith.clock import SystemClock
    from tokensmith.main import Listener, run_listeners
    from tokensmith.metadata.agent import build_agent
    from tokensmith.metadata.instance import ConfigError, check_unique, load_instances, make_spec
    from tokensmith.metadata.runtime import bind_instance, watch_config

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        specs = load_instances(config_file) if config_file else []
        if port is not None:
            fields: dict[str, Any] = {
                "port": port,
                "host": host,
                "name": f"instance-{len(specs) + 1}",
            }
            if service_account:
                fields["service_account"] = service_account
            specs.append(make_spec(**fields))
        elif not specs:
            raise ConfigError("give --port and --service-account, or --config FILE")
        check_unique(specs)
        servers = build_agent(
            server=server,
            credentials=credentials,
            specs=specs,
            clock=SystemClock(),
            project_id=project_id,
            project_number=project_number,
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    listeners: list[Listener] = []
    try:
        for item in servers:
            sock = bind_instance(item.instance)
            listeners.append(
                Listener(f"metadata {item.instance.name}", item, sock, item.stop, False)
            )
    except OSError as exc:
        for listener in listeners:
            listener.sock.close()
        for item in servers:
            item.close()
        raise click.ClickException(str(exc)) from None
    for item in servers:
        click.echo(f"tokensmith metadata agent listening on {item.describe()}")
    click.echo(f"  minting at:         {server}")
    watching = watch_config(config_file, servers) if config_file else None
    try:
        run_listeners(listeners, log_level)
    finally:
        if watching is not None:
            watching.set()
        for listener in listeners:
            listener.sock.close()
        for item in servers:
            item.close()
        click.echo("tokensmith metadata agent stopped")


def register(group: click.Group) -> None:
    """Add ``metadata`` and ``env`` to ``group``, and the ``--metadata-*`` options to ``serve``.

    ``env`` (``cli/env.py``) now covers the whole server, not only its metadata listener; it is
    still registered from here, so that every group built with this ``register`` keeps it.
    """
    group.add_command(metadata)
    env_command.register(group)
    serve = group.commands.get("serve")
    if serve is not None:
        known = {param.name for param in serve.params}
        serve.params.extend(o for o in _SERVE_OPTIONS if o.name not in known)
