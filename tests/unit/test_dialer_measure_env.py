"""DIALGUARD_DIALER_MEASURE_S: predictive pacing's recent measurement window (docs/DIALER.md,
"Measurement windows"); abandon limits are not measured over it."""

import pytest

from ari_app.main import measure_from_env


def test_default_two_hours_and_bounds(monkeypatch):
    monkeypatch.delenv("DIALGUARD_DIALER_MEASURE_S", raising=False)
    assert measure_from_env() == 7200
    monkeypatch.setenv("DIALGUARD_DIALER_MEASURE_S", "1800")
    assert measure_from_env() == 1800
    for bad in ("60", "90000", "two hours"):
        monkeypatch.setenv("DIALGUARD_DIALER_MEASURE_S", bad)
        with pytest.raises(ValueError, match="DIALGUARD_DIALER_MEASURE_S"):
            measure_from_env()
