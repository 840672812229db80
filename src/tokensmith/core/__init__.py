"""Pure domain logic: names, roles, policies, conditions, claims, lifetimes.

Nothing in this package performs I/O or reads the clock; every function is a plain function of
its arguments, so the rules Google documents can be table- and property-tested directly.
"""
