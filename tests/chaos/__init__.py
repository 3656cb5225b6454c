"""The chaos suite: drills that break a running Perseus stack under load, and the invariants it must keep.

``python -m tests.chaos [--short]`` (``make chaos``, ``make chaos-short``). It lives
beside the tests because it is one, but outside pytest's reach (no ``test_*.py``
here): a run takes minutes and owns its own Redis, PostgreSQL and processes.
The pure checkers (:mod:`tests.chaos.checks`) are unit-tested in
``tests/unit/test_chaos_checks.py``. Figures and what each fault does:
``docs/reliability.md``.
"""
