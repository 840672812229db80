"""The ``tokensmith`` command line."""
