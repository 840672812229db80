"""tokensmith: a self-hosted, Google-compatible short-lived credentials service."""

__version__ = "0.1.0"
