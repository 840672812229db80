"""A Compute Engine-style metadata server (metadata.google.internal) for tokensmith.

Workloads get their attached service account's access tokens and ID tokens, and the facts of
their project and instance, from ``/computeMetadata/v1/…`` with Google's header rules and
quirks, so that google-auth, Node's google-auth-library and gcloud use it unchanged
(COMPAT.md §1). It runs inside ``tokensmith serve --metadata-port`` (minting in-process) or on
its own as ``tokensmith metadata`` next to a workload (minting through a remote server's IAM
Credentials API).

    instance   what an instance is: settings-file model, resolution against a project
    tree       the metadata paths and their renderings (pure)
    query      lenient query parsing (unencoded audiences)
    sources    TokenSource: in-process and remote minting, and the token cache
    server     the ASGI app: header rules, redirects, tokens, hanging GETs
    embedded   instances of ``tokensmith serve``
    agent      ``tokensmith metadata``: the stand-alone agent
    runtime    sockets and settings-file watching
"""
