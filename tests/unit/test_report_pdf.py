"""The report as a PDF (dialguard/audit/report_pdf.py): the per-reason denial columns
folded into one, Chinese text embedded with the Debian CJK font and read back, a
missing font a clear error."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pytest

from dialguard.audit.report import Report
from dialguard.audit.report_pdf import FontMissing, cjk_font, folded, to_pdf

UTC = timezone.utc


def report() -> Report:
    return Report("campaign", datetime(2026, 11, 22, 16, tzinfo=UTC), datetime(2026, 11, 23, 16, tzinfo=UTC),
                  "Asia/Shanghai",
                  ["campaign", "attempts", "allowed", "denied", "denied_attempt_cap", "denied_paused", "answered",
                   "abandon_rate"],
                  [["c1", 5, 4, 1, 1, 0, 3, 33.3], ["春季回访", 2, 1, 1, 0, 1, 0, None]],
                  ["total", 7, 5, 2, 1, 1, 3, 33.3])


def test_reason_columns_fold_into_one():
    cols, rows = folded(report())
    assert cols == ["campaign", "attempts", "allowed", "denied", "denied_by_reason", "answered", "abandon_rate"]
    assert rows[0][4] == "attempt_cap 1" and rows[1][4] == "paused 1"
    assert rows[2][4] == "attempt_cap 1\npaused 1" and rows[2][0] == "total"


def test_pdf_carries_chinese_and_the_figures():
    from pypdf import PdfReader

    data = to_pdf(report(), "dialguard 报表（按外呼任务）", lambda c: {"attempts": "尝试"}.get(c, c),
                  ["2026-11-23 至 2026-11-23"])
    assert data.startswith(b"%PDF-")
    text = PdfReader(io.BytesIO(data)).pages[0].extract_text()
    assert "dialguard 报表（按外呼任务）" in text and "尝试" in text and "2026-11-23 至 2026-11-23" in text
    assert "春季回访 2 1 1 paused 1 0 -" in text and "c1 5 4 1 attempt_cap 1 3 33.3%" in text


def test_a_missing_font_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("DIALGUARD_PDF_FONT", str(tmp_path / "none.ttf"))
    with pytest.raises(FontMissing, match="none.ttf not found.*fonts-wqy-microhei"):
        cjk_font()
    with pytest.raises(FontMissing):
        to_pdf(report(), "t", str, [])
