"""Keys, signers, JWTs and the sealing of private keys at rest.

Safe recipes live here; callers never touch padding modes or hash choices. Only RS256 and
ES256 are ever accepted when verifying.
"""
