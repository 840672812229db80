"""The metadata server inside ``tokensmith serve``: instances from settings, minting in-process.

``instance_specs`` reads ``--metadata-port`` / ``--metadata-host`` /
``--metadata-service-account`` (one instance) and ``--metadata-config`` (a list);
``embedded_servers`` resolves them against the server's project and builds one
``MetadataServer`` each, minting through ``services.credentials`` as the Compute Engine service
agent. An attached account other than the default compute account gets the agent's
TokenCreator grant at start when the agent cannot already mint for it (logged); one that does
not exist yet is reported, and needs that grant (or a restart) once created.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tokensmith.config import Settings
from tokensmith.metadata.instance import (
    ConfigError,
    InstanceSpec,
    check_unique,
    load_instances,
    make_spec,
)
from tokensmith.metadata.server import MetadataServer
from tokensmith.metadata.sources import CachingTokenSource, InProcessTokenSource
from tokensmith.services.bootstrap import (
    compute_default_account,
    compute_service_agent,
    ensure_token_creator,
)
from tokensmith.services.iam import Target

if TYPE_CHECKING:
    from tokensmith.main import Services

__all__ = ["embedded_servers", "instance_specs"]

log = logging.getLogger("tokensmith.metadata")

_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_MINT = ("iam.serviceAccounts.getAccessToken", "iam.serviceAccounts.getOpenIdToken")


def instance_specs(settings: Settings) -> list[InstanceSpec]:
    """The instances the settings ask for (none: no metadata server)."""
    specs: list[InstanceSpec] = []
    if settings.metadata_config:
        specs.extend(load_instances(settings.metadata_config))
    if settings.metadata_port:
        fields: dict[str, object] = {
            "port": settings.metadata_port,
            "host": settings.metadata_host,
            "name": f"instance-{len(specs) + 1}",
        }
        if settings.metadata_service_account:
            fields["service_account"] = settings.metadata_service_account
        specs.append(make_spec(**fields))
    elif settings.metadata_service_account:
        raise ConfigError("--metadata-service-account needs --metadata-port")
    check_unique(specs)
    for spec in specs:
        if spec.port == settings.port and spec.host in (settings.host, "0.0.0.0", "::"):  # noqa: S104
            raise ConfigError(
                f"the metadata server cannot share the API's port {spec.port}: it answers "
                "whoever reaches it, so it needs a listener of its own"
            )
    return specs


def embedded_servers(services: Services, specs: list[InstanceSpec]) -> list[MetadataServer]:
    """One in-process ``MetadataServer`` per spec, with the agent's grants in place."""
    project = services.project
    agent = compute_service_agent(project.project_number)
    servers = []
    for spec in specs:
        instance = spec.resolve(
            project_id=project.project_id,
            project_number=project.project_number,
            default_account=compute_default_account(project.project_number),
            created_at=project.created_at,
        )
        if spec.host not in _LOOPBACK:
            log.warning(
                "metadata instance %s listens on %s: anyone who can reach it gets tokens for %s",
                instance.name,
                spec.host,
                instance.service_account,
            )
        if spec.service_account:
            _grant_agent(services, instance.service_account, instance.name)
        source = InProcessTokenSource(services.credentials, instance, agent)
        servers.append(
            MetadataServer(instance, CachingTokenSource(source, services.clock), services.clock)
        )
    return servers


def _grant_agent(services: Services, email: str, instance_name: str) -> None:
    agent = compute_service_agent(services.project.project_number)
    account = services.directory.by_email(email)
    if account is None:
        log.warning(
            "metadata instance %s: service account %s does not exist; create it, then grant %s "
            "roles/iam.serviceAccountTokenCreator on it (or restart, which grants it)",
            instance_name,
            email,
            agent.member,
        )
        return
    project = services.store.get_project(account.project_id)
    if project is None:  # cannot happen: a foreign key
        return
    target = Target(project, account)
    if all(services.iam.decide(agent, p, target).allowed for p in _MINT):
        return
    if ensure_token_creator(services.store, services.clock, target, agent.member):
        log.warning(
            "metadata instance %s: granted %s roles/iam.serviceAccountTokenCreator on %s, so "
            "that the metadata server can mint its tokens",
            instance_name,
            agent.member,
            email,
        )
