"""`dialguard report` as a PDF (the console's export): the same Report, one table,
landscape A4, in the reader's language, with a CJK font so Chinese prints.

fpdf2 embeds a subset of the font; the font comes from Debian's packages
(fonts-wqy-microhei, installed by scripts/setup.sh), never downloaded.
DIALGUARD_PDF_FONT names another TrueType/OpenType file (or collection).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from dialguard.audit.report import Report

FONTS = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
         "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
         "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")


class FontMissing(RuntimeError):
    pass


def cjk_font() -> Path:
    env = os.environ.get("DIALGUARD_PDF_FONT")
    for f in ([env] if env else list(FONTS)):
        if Path(f).is_file():
            return Path(f)
    raise FontMissing(f"no CJK font for the PDF: {env or ', '.join(FONTS)} not found "
                      "(install fonts-wqy-microhei, or set DIALGUARD_PDF_FONT)")


def folded(rep: Report) -> tuple[list[str], list[list]]:
    """The columns with the per-reason denial columns folded into one ("denied_by_reason"),
    one "reason n" line per reason, as the terminal table shows them; the held-back
    leads by reason likewise ("held_by_reason")."""
    reason_cols = [i for i, c in enumerate(rep.columns) if c.startswith("denied_")]
    held_cols = [i for i, c in enumerate(rep.columns) if c.startswith("held_") and c not in ("held_back", "held_s")]
    skip = set(reason_cols) | set(held_cols)
    cols, out = [], []
    for i, c in enumerate(rep.columns):
        if i in skip:
            continue
        cols.append(c)
        if c == "denied" and reason_cols:
            cols.append("denied_by_reason")
        if c == "held_back" and held_cols:
            cols.append("held_by_reason")

    def fold(row):
        cells = []
        for i, c in enumerate(rep.columns):
            if i in skip:
                continue
            cells.append(row[i])
            if c == "denied" and reason_cols:
                cells.append("\n".join(f"{rep.columns[j][7:]} {row[j]}" for j in reason_cols if row[j]))
            if c == "held_back" and held_cols:
                cells.append("\n".join(f"{rep.columns[j][5:]} {row[j]}" for j in held_cols if row[j]))
        return cells

    for r in rep.rows:
        out.append(fold(r))
    if rep.totals:
        out.append(fold(rep.totals))
    return cols, out


def _text(col: str, v) -> str:
    if v is None:
        return "-"
    if col.endswith("_rate") or col.startswith("share_"):
        return f"{v}%"
    return str(v)


def to_pdf(rep: Report, title: str, heading, meta: list[str]) -> bytes:
    """heading(column) -> the column's header in the reader's language; meta: lines under the title."""
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_margins(10, 10, 10)
    pdf.set_auto_page_break(True, margin=12)
    pdf.set_creator("dialguard")
    pdf.set_title(title)
    pdf.set_creation_date(datetime.now(timezone.utc))
    pdf.add_font("cjk", fname=str(cjk_font()))
    pdf.add_font("cjk", style="B", fname=str(cjk_font()))  # the same face: bold is drawn by the header fill
    pdf.add_page()
    pdf.set_font("cjk", size=14)
    pdf.multi_cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("cjk", size=8)
    for line in meta:
        pdf.multi_cell(0, 4.5, line, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    cols, rows = folded(rep)
    widths = [3.2 if i == 0 else 4.0 if c in ("denied_by_reason", "held_by_reason", "abandon_limit") else 1.4
              for i, c in enumerate(cols)]
    pdf.set_font("cjk", size=7)
    head_style = FontFace(emphasis=None, fill_color=(225, 230, 240))
    with pdf.table(col_widths=widths, headings_style=head_style, line_height=3.6, padding=1,
                   text_align=["LEFT" if i == 0 or c in ("denied_by_reason", "held_by_reason", "abandon_limit") else "RIGHT"
                               for i, c in enumerate(cols)]) as table:
        hr = table.row()
        for c in cols:
            hr.cell(heading(c))
        for n, r in enumerate(rows):
            total = rep.totals is not None and n == len(rows) - 1
            row = table.row(style=FontFace(fill_color=(240, 240, 240)) if total else None)
            for c, v in zip(cols, r):
                row.cell(_text(c, v))
    if not rep.rows:
        pdf.ln(2)
        pdf.cell(0, 5, heading("(empty)"))
    return bytes(pdf.output())
