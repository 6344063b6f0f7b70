"""The e2e fixtures these tests share (a target, process helpers)."""

from tests.e2e.conftest import target  # noqa: F401 (a fixture)
