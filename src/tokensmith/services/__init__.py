"""Use-cases: authentication, IAM, accounts and keys, OAuth grants, org policy, bootstrap.

Services depend on the ``Store`` protocol, a ``Clock`` and each other, never on a web framework
or a concrete database; ``tokensmith.main`` wires them together.
"""
