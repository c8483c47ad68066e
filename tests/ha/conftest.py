"""Failover tests: they need the HA stack (`DIALGUARD_REDIS_HA=1 make up`,
or `make test-ha`). They kill the primary; each leaves the stack whole again."""

from __future__ import annotations

import pytest

from tests.ha import ha


@pytest.fixture
def ha_settings():
    try:
        s = ha.require_ha()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    if ha.primary(s) is None:
        pytest.fail("no Sentinel names a primary: is the HA stack up?")
    yield s
    ha.restore(s)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The HA tests need the whole stack answering, as the e2e tests do."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(here):
            item.add_marker(pytest.mark.e2e)
