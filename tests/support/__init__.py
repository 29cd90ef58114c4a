"""Helpers the test tiers and the benchmarks (bench/) share, each defined once here.

- ``tests.support.net``: free loopback ports, whether a port answers;
- ``tests.support.wait``: polling instead of fixed sleeps (``wait_for``, ``wait_http``);
- ``tests.support.budget``: Hypothesis example budgets that follow the loaded profile
  (tests/conftest.py registers ``default`` and ``deep``).

The real hub harness (``Werkhub``, ``make_werkhub``) stays in tests/support/hub.py, its one
definition, and uses these. ``net`` and ``wait`` import only the standard library and
httpx, so the benchmarks use them without pytest.
"""
