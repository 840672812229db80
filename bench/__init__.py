"""tokensmith's benchmark: ``bench/run`` measures a real ``tokensmith serve`` under wrk.

Every figure is printed as a ratio against a baseline measured in the same run (the RSA-2048
signing ceiling of ``openssl speed`` on the same cores, a peer server, a smaller database), so
results from a noisy machine still compare. Loopback traffic only; every process it starts is
stopped before it exits. See ``bench/README.md``.
"""
