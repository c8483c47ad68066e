"""make test's shifted pass starts with the main pass's first e2e test
(tests/e2e/shifted_pass.py, scripts/run-tests.sh)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from shifted_pass import e2e_started  # noqa: E402


def test_the_first_e2e_test_creates_the_file(tmp_path, monkeypatch) -> None:
    marker = tmp_path / "e2e-started"
    monkeypatch.setenv("DIALGUARD_E2E_STARTED_FILE", str(marker))
    assert e2e_started(False) is False and not marker.exists()  # an integration test: not yet
    assert e2e_started(True) is True and marker.exists()
    assert e2e_started(True) is False  # once


def test_nothing_without_the_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("DIALGUARD_E2E_STARTED_FILE", raising=False)
    assert e2e_started(True) is False
    assert list(tmp_path.iterdir()) == []


def test_run_tests_waits_for_that_file() -> None:
    root = Path(__file__).resolve().parents[2]
    script = (root / "scripts" / "run-tests.sh").read_text()
    assert "DIALGUARD_E2E_STARTED_FILE" in script
    assert "DIALGUARD_DATES_ALONGSIDE=1" in script
    assert "shifted_ports_free" in script  # busy ports: after the main pass, as before
    assert "DIALGUARD_DATES_ALONGSIDE" in (root / "scripts" / "test-dates.sh").read_text()
