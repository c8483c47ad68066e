"""dialguard install asterisk (dialguard/install.py): what it writes, what it
never touches, idempotence."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialguard.install import (GLOBALS, INCLUDE_DIALPLAN, INCLUDE_GLOBALS, OURS, InstallError, apply,
                               missing_includes, plan, with_includes)

REPO = Path(__file__).resolve().parents[2]


def test_packaged_dialplan_is_the_checkout_s(tmp_path: Path) -> None:
    changes = plan(tmp_path, "agi://127.0.0.1:14573")
    by_name = {c.path.name: c for c in changes}
    assert set(by_name) == {*OURS, GLOBALS}
    for name in OURS:
        assert by_name[name].new == (REPO / "asterisk_conf" / name).read_text()
        assert by_name[name].old is None and by_name[name].diff().startswith("--- /dev/null")


def test_second_plan_is_empty_and_globals_stay_the_admin_s(tmp_path: Path) -> None:
    apply(plan(tmp_path, "agi://10.0.0.5:4573"))
    assert "DIALGUARD_AGI = agi://10.0.0.5:4573" in (tmp_path / GLOBALS).read_text()
    assert plan(tmp_path, "agi://10.0.0.5:4573") == []
    (tmp_path / GLOBALS).write_text("DIALGUARD_AGI = agi://10.0.0.9:1\n")  # the admin edited it
    assert plan(tmp_path, "agi://127.0.0.1:14573") == []
    (tmp_path / OURS[0]).write_text("; stale\n")  # ours: replaced, with a diff
    (change,) = plan(tmp_path, "agi://127.0.0.1:14573")
    assert change.path.name == OURS[0] and "-; stale" in change.diff()


def test_extensions_conf_only_with_includes_and_once(tmp_path: Path) -> None:
    ext = tmp_path / "extensions.conf"
    ext.write_text("[general]\n\n[globals]\nA=1\n[ctx]\nexten => 1,1,Answer()")
    assert all(c.path != ext for c in plan(tmp_path, "agi://127.0.0.1:14573"))
    apply(plan(tmp_path, "agi://127.0.0.1:14573", apply_includes=True))
    text = ext.read_text()
    assert text == ("[general]\n\n[globals]\n" + INCLUDE_GLOBALS + "\nA=1\n[ctx]\nexten => 1,1,Answer()\n\n"
                    "; dialguard (dialguard install asterisk)\n" + INCLUDE_DIALPLAN + "\n")
    assert (tmp_path / "extensions.conf.dialguard-backup").read_text().startswith("[general]\n\n[globals]\nA=1")
    assert with_includes(text) == text and missing_includes(tmp_path) == []


def test_without_globals_section_one_is_added() -> None:
    text = with_includes("[ctx]\n")
    assert text.count("[globals]\n" + INCLUDE_GLOBALS) == 1 and text.rstrip().endswith(INCLUDE_DIALPLAN)


@pytest.mark.parametrize("url", ["agi://x;rm -rf", "http://127.0.0.1:1", "agi://127.0.0.1", ""])
def test_bad_agi_url_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(InstallError):
        plan(tmp_path, url)


def test_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="no such folder"):
        plan(tmp_path / "nope", "agi://127.0.0.1:14573")
