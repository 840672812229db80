"""A small client for a tokensmith server: credentials files, REST calls, policy edits.

It imports nothing of the server (``services``, ``store``, ``api``, ``main``): it is what a
program outside the server would write, and the administration CLI is built on it.

    ClientError          every failure, as one line: ``STATUS (code): message``
    load_credentials     an ``authorized_user`` or ``service_account`` JSON file → Credentials
    Client               JSON over HTTP with the bearer token the credentials buy
"""

from tokensmith.client.credentials import (
    AuthorizedUserCredentials,
    Credentials,
    ServiceAccountCredentials,
    credentials_from_info,
    load_credentials,
)
from tokensmith.client.errors import ClientError
from tokensmith.client.rest import Client

__all__ = [
    "AuthorizedUserCredentials",
    "Client",
    "ClientError",
    "Credentials",
    "ServiceAccountCredentials",
    "credentials_from_info",
    "load_credentials",
]
