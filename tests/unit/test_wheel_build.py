"""test_installed_wheel's build starts at the session's collection, in the background,
only when the session runs that module (tests/e2e/wheel_build.py, tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import wheel_build  # noqa: E402


def test_wanted_only_when_the_module_is_selected() -> None:
    assert wheel_build.wanted(["tests/e2e/test_installed_wheel.py::test_installed_server_answers_the_pbx"])
    assert wheel_build.wanted(["tests/unit/test_x.py::t", "tests/e2e/test_installed_wheel.py::test_a[1]"])
    assert not wheel_build.wanted(["tests/e2e/test_guard_allow.py::test_a", "tests/integration/test_web.py::t"])
    assert not wheel_build.wanted([])


def test_no_build_started_for_a_session_without_it(monkeypatch) -> None:
    monkeypatch.setattr(wheel_build, "_build", None)
    assert wheel_build.start_if_wanted(["tests/unit/test_wheel_build.py::t"]) is None


def test_a_failed_step_stops_the_build_with_its_code(tmp_path, monkeypatch) -> None:
    """The build's exit code is the first failed command's; later steps do not run."""
    assert wheel_build.build(tmp_path, python="/bin/false") == 1
    log = (tmp_path / "build.log").read_text()
    assert "pip wheel" in log and "venv" not in log.replace(str(tmp_path), "")


def test_the_session_starts_it_at_collection() -> None:
    conftest = (Path(__file__).resolve().parents[1] / "conftest.py").read_text()
    assert "def pytest_collection_finish" in conftest and "wheel_build.start_if_wanted" in conftest
    fixture = (Path(__file__).resolve().parents[1] / "e2e" / "test_installed_wheel.py").read_text()
    assert "wheel_build.get()" in fixture
