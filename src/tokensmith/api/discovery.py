"""Public key and discovery documents (no authentication), as Google publishes them:

- ``/.well-known/openid-configuration`` — OIDC discovery for this issuer;
- ``/oauth2/v3/certs`` — the issuer's JWKS (RFC 7517);
- ``/oauth2/v1/certs`` — ``{kid: PEM X.509 certificate}``, the form Node's verifier reads;
- per service account (the keys ``signBlob``/``signJwt`` sign with, and its user-managed keys):
  ``/service_accounts/v1/metadata/x509/{EMAIL}`` (alias ``/robot/v1/metadata/x509/{EMAIL}``),
  ``/service_accounts/v1/metadata/jwk/{EMAIL}`` (alias ``/service_accounts/v1/jwk/{EMAIL}``) and
  ``/service_accounts/v1/metadata/raw/{EMAIL}`` (``{kid: PEM public key}``).

``Cache-Control: public, max-age=N`` with N shorter than the key rotation's pre-publication
time, so a verifier that honours caching always has a key before it first signs.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokensmith.api.errors import json_response
from tokensmith.crypto.keys import cached_public_key
from tokensmith.errors import NotFound

__all__ = ["CERTS_MAX_AGE", "public_cache_headers", "routes"]

CERTS_MAX_AGE = 3600


def public_cache_headers(max_age: int = CERTS_MAX_AGE) -> dict[str, str]:
    return {"Cache-Control": f"public, max-age={max_age}, must-revalidate, no-transform"}


def _services(request: Request) -> Any:
    return request.app.state.services


async def jwks(request: Request) -> Response:
    keys = [k.public.jwk for k in _services(request).keyring.published()]
    return json_response({"keys": keys}, headers=public_cache_headers())


async def pem_certs(request: Request) -> Response:
    certs = {k.key_id: k.certificate_pem for k in _services(request).keyring.published()}
    return json_response(certs, headers=public_cache_headers())


async def openid_configuration(request: Request) -> Response:
    services = _services(request)
    base = services.settings.base_url
    return json_response(
        {
            "issuer": services.settings.issuer,
            "authorization_endpoint": f"{base}/o/oauth2/v2/auth",
            "token_endpoint": f"{base}/token",
            "revocation_endpoint": f"{base}/revoke",
            "jwks_uri": f"{base}/oauth2/v3/certs",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "grant_types_supported": [
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
            ],
            "claims_supported": [
                "aud",
                "azp",
                "email",
                "email_verified",
                "exp",
                "iat",
                "iss",
                "sub",
            ],
        },
        headers=public_cache_headers(),
    )


def _account_keys(request: Request) -> list[tuple[str, str, dict[str, str], str]]:
    """(kid, certificate PEM, JWK, public PEM) of every key an account's documents publish."""
    services = _services(request)
    email = request.path_params["email"].lower()
    account = services.directory.by_email(email)
    if account is None:
        raise NotFound(f"Service account {email[:254]} not found.")
    out = [
        (k.key_id, k.certificate_pem, k.public.jwk, k.public.pem)
        for k in services.account_keys.published(account)
    ]
    for key in services.store.list_keys(account.unique_id):
        if key.key_type == "USER_MANAGED" and not key.disabled:
            public = cached_public_key(key.key_id, key.public_key_pem)
            out.append((key.key_id, key.certificate_pem, public.jwk, key.public_key_pem))
    return out


async def account_x509(request: Request) -> Response:
    body = {kid: cert for kid, cert, _, _ in _account_keys(request)}
    return json_response(body, headers=public_cache_headers())


async def account_jwk(request: Request) -> Response:
    body = {"keys": [jwk for _, _, jwk, _ in _account_keys(request)]}
    return json_response(body, headers=public_cache_headers())


async def account_raw(request: Request) -> Response:
    body = {kid: pem for kid, _, _, pem in _account_keys(request)}
    return json_response(body, headers=public_cache_headers())


routes = [
    Route("/service_accounts/v1/metadata/x509/{email}", account_x509, methods=["GET"]),
    Route("/robot/v1/metadata/x509/{email}", account_x509, methods=["GET"]),
    Route("/service_accounts/v1/metadata/jwk/{email}", account_jwk, methods=["GET"]),
    Route("/service_accounts/v1/jwk/{email}", account_jwk, methods=["GET"]),
    Route("/service_accounts/v1/metadata/raw/{email}", account_raw, methods=["GET"]),
    Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    Route("/oauth2/v3/certs", jwks, methods=["GET"]),
    Route("/oauth2/v1/certs", pem_certs, methods=["GET"]),
]
