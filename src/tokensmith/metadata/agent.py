"""``tokensmith metadata``: the metadata server on its own, next to a workload.

Like GKE's metadata server in front of the IAM Credentials API, the agent holds a credential of
its own (a key file or an authorized-user file) and mints the attached account's tokens with
``generateAccessToken`` / ``generateIdToken`` on a remote tokensmith server: that credential
needs ``roles/iam.serviceAccountTokenCreator`` on the attached account, and the server applies
the same IAM checks and audit log as for any caller.

Difference from the embedded server: the remote API cannot add ``google.compute_engine`` claims,
so a ``format=full`` ID token carries the email (``includeEmail``) but no instance claims.

The project id and number come from the API when the agent's credential may read them
(``iam.serviceAccounts.get`` on the account, which TokenCreator includes;
``resourcemanager.projects.get`` on the project), else from the flags, else from the email.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from tokensmith.client import Client, ClientError, load_credentials
from tokensmith.clock import Clock
from tokensmith.metadata.instance import ConfigError, InstanceSpec
from tokensmith.metadata.server import MetadataServer
from tokensmith.metadata.sources import CachingTokenSource, MetadataError, RemoteTokenSource

__all__ = ["build_agent"]

log = logging.getLogger("tokensmith.metadata")

# Node's metadata client gives up after 3 s and google-auth retries each attempt after 3 s:
# answer 503 (retried by both) before they give up, rather than hang on a slow server.
REMOTE_TIMEOUT = 2.5

_PROJECT_ACCOUNT = re.compile(r"^[^@]+@([a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com$")
_COMPUTE_DEFAULT = re.compile(r"^([0-9]+)-compute@developer\.gserviceaccount\.com$")


def build_agent(
    *,
    server: str,
    credentials: str,
    specs: Sequence[InstanceSpec],
    clock: Clock,
    project_id: str = "",
    project_number: str = "",
) -> list[MetadataServer]:
    """One ``MetadataServer`` per spec, minting at ``server`` with the ``credentials`` file.

    Raises ``ConfigError`` for anything the operator must fix (a credential that cannot mint,
    an unknown project number); a server that cannot be reached is only a warning.
    """
    servers: list[MetadataServer] = []
    try:
        for spec in specs:
            servers.append(
                _agent_server(spec, server, credentials, clock, project_id, project_number)
            )
    except BaseException:
        for built in servers:
            built.close()
        raise
    return servers


def _agent_server(
    spec: InstanceSpec,
    server: str,
    credentials: str,
    clock: Clock,
    project_id: str,
    project_number: str,
) -> MetadataServer:
    if not spec.service_account:
        raise ConfigError(
            f"instance {spec.name}: the agent needs the attached account "
            "(--service-account or service_account in the config)"
        )
    try:
        client = Client(server, load_credentials(credentials, clock=clock), timeout=REMOTE_TIMEOUT)
    except ClientError as exc:
        raise ConfigError(str(exc)) from None
    try:
        email = spec.service_account.lower()
        pid, number = _project(client, email, project_id, project_number)
        instance = spec.resolve(
            project_id=pid,
            project_number=number,
            default_account=email,
            created_at=clock.now(),
        )
        tokens = CachingTokenSource(RemoteTokenSource(client, email), clock)
        _check_minting(tokens, instance.spec.scopes, email, server)
    except BaseException:
        client.close()
        raise
    return MetadataServer(instance, tokens, clock)


def _check_minting(
    tokens: CachingTokenSource, scopes: tuple[str, ...], email: str, server: str
) -> None:
    """Mint once at start (the token is cached and served): a denial is a start-up error."""
    try:
        tokens.access_token(scopes)
    except MetadataError as exc:
        if exc.status == 503:
            log.warning("metadata agent: %s (will retry on the first request)", exc.message)
            return
        raise ConfigError(exc.message) from None
    log.info("metadata agent: minting for %s at %s", email, server)


def _project(client: Client, email: str, project_id: str, project_number: str) -> tuple[str, str]:
    pid = project_id
    if not pid:
        try:
            pid = str(client.get(f"/v1/projects/-/serviceAccounts/{email}").get("projectId", ""))
        except ClientError as exc:
            log.info("metadata agent: cannot read %s (%s); guessing its project", email, exc)
    number = project_number
    compute = _COMPUTE_DEFAULT.match(email)
    if not number and compute:
        number = compute.group(1)
    if not pid:
        match = _PROJECT_ACCOUNT.match(email)
        if match is None:
            raise ConfigError(
                f"cannot tell the project of {email}: pass --project-id (and --project-number)"
            )
        pid = match.group(1)
    if not number:
        try:
            number = str(client.get(f"/v1/projects/{pid}").get("projectNumber", ""))
        except ClientError as exc:
            raise ConfigError(
                f"cannot read the number of project {pid} ({exc}): pass --project-number, or "
                "grant the agent's credential roles/browser on the project"
            ) from None
    if not number.isdigit():
        raise ConfigError(f"project number {number!r} is not a number")
    return pid, number
