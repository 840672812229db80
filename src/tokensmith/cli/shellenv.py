"""What ``tokensmith env`` prints and in which syntax: pure functions of ``server.json``.

Which variable each client honours is COMPAT.md's finding (§1–§6):

- ``GOOGLE_APPLICATION_CREDENTIALS``: application default credentials, every library;
- ``CLOUDSDK_AUTH_TOKEN_HOST`` (gcloud's ``auth/token_host``) and
  ``CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS`` (``api_endpoint_overrides/iamcredentials``,
  an absolute URL that must end in ``/``);
- ``GCE_METADATA_HOST`` (google-auth's metadata calls, Node), ``GCE_METADATA_IP`` (google-auth's
  detection ping) and ``GCE_METADATA_ROOT`` (gcloud, which ignores ``GCE_METADATA_HOST``);
- ``HTTPS_PROXY``/``https_proxy`` and ``NO_PROXY``/``no_proxy`` (loopback, the metadata server
  and the API stay direct); ``REQUESTS_CA_BUNDLE`` and ``CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE``
  (the local CA followed by the system roots: they replace the roots); ``SSL_CERT_FILE`` (the
  same, set only when that bundle does hold system roots, since every OpenSSL program then
  trusts nothing else); ``NODE_EXTRA_CA_CERTS`` (the CA alone: Node adds it to its roots).

gcloud's ``proxy/type``, ``proxy/address`` and ``proxy/port`` are deliberately left alone: with
them gcloud turns ``trust_env`` off and sends every request, loopback included, to the proxy,
which refuses plain HTTP (``googlecloudsdk/core/requests.py``); from ``HTTPS_PROXY`` it honours
``NO_PROXY``.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FORMATS",
    "LOOPBACK",
    "Comment",
    "Credentials",
    "EnvProblem",
    "Line",
    "Metadata",
    "Note",
    "Variable",
    "choose_metadata",
    "environment",
    "host_of",
    "metadata_lines",
    "render",
]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
FORMATS = ("shell", "fish", "dotenv", "json")


class EnvProblem(ValueError):
    """``server.json`` cannot give what was asked (an unknown metadata instance, say)."""


@dataclasses.dataclass(frozen=True)
class Variable:
    name: str
    value: str


@dataclasses.dataclass(frozen=True)
class Comment:
    """Says what the variables after it are for (shell and fish only)."""

    text: str


@dataclasses.dataclass(frozen=True)
class Note:
    """Something left out and why, with the flag that would put it in (shell and fish only)."""

    text: str


Line = Variable | Comment | Note


@dataclasses.dataclass(frozen=True)
class Credentials:
    """The file ``GOOGLE_APPLICATION_CREDENTIALS`` names, and whose it is (for the comment)."""

    path: Path
    who: str


# what to print --------------------------------------------------------------------------------


def metadata_lines(address: str, what: str) -> list[Line]:
    """The three metadata variables for the listener at ``address`` (``HOST:PORT``)."""
    return [
        Comment(f"tokensmith metadata server {what}"),
        Variable("GCE_METADATA_HOST", address),
        Variable("GCE_METADATA_IP", address),
        Variable("GCE_METADATA_ROOT", address),
    ]


def host_of(address: str) -> str:
    """The host of ``HOST:PORT``, ``[V6]:PORT`` or a URL, as ``NO_PROXY`` lists hosts."""
    netloc = urllib.parse.urlsplit(address if "://" in address else f"//{address}").netloc
    host = netloc.rpartition("@")[2]
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rpartition(":")[0] if ":" in host else host


@dataclasses.dataclass(frozen=True)
class Metadata:
    """The metadata listener the clients are pointed at."""

    address: str  # HOST:PORT
    what: str  # for the comment


def choose_metadata(
    record: dict[str, Any] | None, instance: str | None = None, address: str | None = None
) -> Metadata | None:
    """The listener at ``address`` (a stand-alone agent), else the server's ``instance`` (by
    name or address; default its first), else None if the server runs none."""
    if address is not None:
        address = address.removeprefix("http://").rstrip("/")
        return Metadata(address, f"at {address}")
    listeners = (record or {}).get("metadata") or []
    if instance is None:
        chosen = listeners[0] if listeners else None
    else:
        if not listeners:
            raise EnvProblem(
                "this server runs no metadata server: start it with `tokensmith serve "
                "--metadata-port PORT` (or --metadata-config FILE)"
            )
        matches = [m for m in listeners if instance in (m.get("name"), str(m.get("address")))]
        if not matches:
            names = ", ".join(str(m.get("name")) for m in listeners)
            raise EnvProblem(f"no metadata instance {instance!r} (instances: {names})")
        chosen = matches[0]
    if chosen is None:
        return None
    return Metadata(
        str(chosen["address"]), f"{chosen.get('name')} ({chosen.get('service_account')})"
    )


def environment(
    record: dict[str, Any] | None,
    *,
    credentials: Credentials | Note,
    metadata: Metadata | None,
    bundle_has_roots: bool = True,
) -> list[Line]:
    """What ``env`` prints for a ``server.json`` record (None: no server, only an agent).

    ``credentials`` is the file for ``GOOGLE_APPLICATION_CREDENTIALS``, or a note saying why
    there is none; ``metadata`` the listener (``choose_metadata``); ``bundle_has_roots`` says
    whether the proxy's CA bundle holds the system roots as well.
    """
    lines: list[Line] = []
    if record is not None:
        api = str(record["api"]).rstrip("/")
        lines.append(Comment(f"tokensmith server {api}"))
        if isinstance(credentials, Note):
            lines.append(credentials)
        else:
            lines += [
                Comment(f"application default credentials: {credentials.who}"),
                Variable("GOOGLE_APPLICATION_CREDENTIALS", str(credentials.path)),
            ]
        lines += [
            Comment("gcloud: the token endpoint and the IAM Credentials API of this server"),
            Variable("CLOUDSDK_AUTH_TOKEN_HOST", str(record["token_uri"])),
            Variable("CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS", f"{api}/"),
        ]
    if metadata is not None:
        lines += metadata_lines(metadata.address, metadata.what)
    elif record is not None:
        lines.append(
            Note(
                "no metadata server: `tokensmith serve --metadata-port PORT` serves one "
                "(GCE_METADATA_HOST, GCE_METADATA_IP, GCE_METADATA_ROOT)"
            )
        )
    if record is not None:
        metadata_host = host_of(metadata.address) if metadata is not None else None
        lines += _proxy_lines(record, metadata_host, bundle_has_roots)
    return lines


def _proxy_lines(
    record: dict[str, Any], metadata_host: str | None, bundle_has_roots: bool
) -> list[Line]:
    proxy = record.get("proxy")
    if not proxy:
        return [
            Note(
                "no HTTPS proxy: `tokensmith serve --proxy-port PORT` serves the hosts Google's "
                "clients hard-code (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, SSL_CERT_FILE, "
                "NODE_EXTRA_CA_CERTS, CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE); without it Python's "
                "impersonated ID tokens and signBlob, authorized_user refreshes in Python and "
                "Node, and Node's key-file grants go to Google"
            )
        ]
    direct = list(LOOPBACK)
    for host in (metadata_host, host_of(str(record["api"]))):
        if host and host not in direct:
            direct.append(host)
    no_proxy = ",".join(direct)
    url, bundle = str(proxy["url"]), str(proxy["ca_bundle"])
    hosts = str(proxy.get("hosts") or "Google's hosts").replace(",", ", ")
    lines: list[Line] = [
        Comment(f"tokensmith HTTPS proxy for {hosts}"),
        Variable("HTTPS_PROXY", url),
        Variable("https_proxy", url),
        Variable("NO_PROXY", no_proxy),
        Variable("no_proxy", no_proxy),
        Variable("REQUESTS_CA_BUNDLE", bundle),
    ]
    if bundle_has_roots:
        lines.append(Variable("SSL_CERT_FILE", bundle))
    else:
        lines.append(
            Note(
                f"SSL_CERT_FILE not set: {bundle} holds no system roots, so every other HTTPS "
                "would fail to verify (install certifi or the system's CA certificates and "
                "restart the server)"
            )
        )
    lines += [
        Variable("NODE_EXTRA_CA_CERTS", str(proxy["ca"])),
        Comment("gcloud takes HTTPS_PROXY and NO_PROXY (its proxy/* properties ignore NO_PROXY)"),
        Variable("CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE", bundle),
    ]
    return lines


# how to print it ------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fish_quote(value: str) -> str:
    # Inside fish's single quotes only \\ and \' are escapes.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _dotenv_quote(value: str) -> str:
    # The double-quoted form python-dotenv, Node's dotenv and docker compose all read.
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render(lines: Sequence[Line], output_format: str) -> str:
    """``lines`` in one of ``FORMATS``; comments and notes only in shell and fish."""
    variables = [line for line in lines if isinstance(line, Variable)]
    if output_format == "json":
        return json.dumps({v.name: v.value for v in variables}, indent=2)
    if output_format == "dotenv":
        return "\n".join(f"{v.name}={_dotenv_quote(v.value)}" for v in variables)
    if output_format not in ("shell", "fish"):
        raise ValueError(f"unknown format {output_format!r}; one of {', '.join(FORMATS)}")
    out = []
    for line in lines:
        # A comment is one line whatever it quotes: a newline in it would be run by `eval`.
        if isinstance(line, Comment):
            out.append(f"# {_one_line(line.text)}")
        elif isinstance(line, Note):
            out.append(f"# note: {_one_line(line.text)}")
        elif output_format == "fish":
            out.append(f"set -gx {line.name} {_fish_quote(line.value)}")
        else:
            out.append(f"export {line.name}={shlex.quote(line.value)}")
    return "\n".join(out)
