"""The bulk imports' CSV readers (DNC lists: dnc.read_numbers and _Source; dialer
leads: leads.parse_leads) account for every line of the file: each is the header,
an imported row or a reported one. A quote left open must not take the lines after
it into one value (a DNC number nobody sees is called); the first row is a header
naming the number column or a number, the same rule and headers for both."""

from __future__ import annotations

import os
import re

import pytest

from dialguard.campaigns.leads import LeadFileError, parse_leads
from dialguard.dnc import DncFileError, _Source, _split_block, _work

N = [f"+86138001380{i:02d}" for i in range(10)]


def dnc(path):
    """(imported {line: value}, rejected [(line, value, why)]) of a DNC file: the
    import's own source and workers, without the sinks."""
    src = _Source(path, "CN")
    secret = os.urandom(32)
    imported, rejected = {}, []
    try:
        for n, parts in src.chunks(2, 2):
            got = 0
            for part in parts:
                _, valid, bad, _ = _work((part, "CN", secret, None))
                rejected += bad
                if part[0] == "rejected":
                    got += len(part[1])
                    continue
                lines, raws = _split_block(*part[1:]) if part[0] == "block" else part[1:]
                imported.update(zip(lines, raws))
                got += len(lines)
            assert got == n
    finally:
        src.close()
    for line, _, _ in rejected:
        imported.pop(line, None)
    return imported, sorted(rejected)


def lines_of(why: str, line: int) -> set[int]:
    m = re.match(r"lines (\d+)-(\d+): ", why)
    return set(range(int(m[1]), int(m[2]) + 1)) if m else {line}


def accounted(total: int, header: bool, imported, rejected) -> None:
    """Every line 1..total is the header, imported, or inside a rejected row's lines."""
    seen = [1] if header else []
    seen += list(imported)
    for line, why in rejected:
        seen += sorted(lines_of(why, line))
    assert sorted(seen) == list(range(1, total + 1))


def write(tmp_path, name, text, bom=False):
    p = tmp_path / name
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return p


# quote opened on line 3, never closed: the csv reader takes lines 3-5 into one field
OPEN_TO_END = f'number\n{N[0]}\n"{N[1]}\n{N[2]}\n{N[3]}\n'
# quote opened on line 3 and closed on line 4: line 5 is read again as it should be
OPEN_IN_MIDDLE = f'number\n{N[0]}\n"{N[1]}\n{N[2]}"\n{N[3]}\n'
# quote opened on the last line: its field holds the line break, on one line
OPEN_ON_LAST = f'number\n{N[0]}\n"{N[1]}\n'


def test_dnc_quote_left_open_to_the_end_is_one_rejected_row_naming_its_lines(tmp_path):
    imported, rejected = dnc(write(tmp_path, "a.csv", OPEN_TO_END))
    assert imported == {2: N[0]}
    assert [(ln, v) for ln, v, _ in rejected] == [(3, N[1])]
    assert rejected[0][2].startswith("lines 3-5: a quote opened on line 3 is not closed")
    accounted(5, True, imported, [(ln, w) for ln, _, w in rejected])


def test_dnc_quote_left_open_in_the_middle_loses_no_line_after_it(tmp_path):
    imported, rejected = dnc(write(tmp_path, "m.csv", OPEN_IN_MIDDLE))
    assert imported == {2: N[0], 5: N[3]}
    assert [(ln, w.split(":")[0]) for ln, _, w in rejected] == [(3, "lines 3-4")]
    accounted(5, True, imported, [(ln, w) for ln, _, w in rejected])


def test_dnc_quote_left_open_on_the_last_line(tmp_path):
    imported, rejected = dnc(write(tmp_path, "l.csv", OPEN_ON_LAST))
    assert imported == {2: N[0]}
    assert rejected == [(3, N[1], rejected[0][2])]
    assert rejected[0][2].startswith("line 3: a quote opened on line 3 is not closed before the end of the file")


def test_dnc_quoted_field_with_a_comma_and_crlf_is_data(tmp_path):
    imported, rejected = dnc(write(tmp_path, "q.csv", f'name,number\r\n"Li, Lei",{N[0]}\r\n"Wang",{N[1]}\r\n'))
    assert (imported, rejected) == ({2: N[0], 3: N[1]}, [])


@pytest.mark.parametrize("header", ["姓名,手机号", "Name,Phone Number", "name,phone-number", "客户,联系电话"])
def test_dnc_headers_the_lead_import_knows(tmp_path, header):
    imported, rejected = dnc(write(tmp_path, "h.csv", f"{header}\nLi,{N[0]}\nWang,{N[1]}\n"))
    assert (imported, rejected) == ({2: N[0], 3: N[1]}, [])


def test_dnc_bom_file(tmp_path):
    """A UTF-8 BOM (Excel's 'CSV UTF-8') is not part of the header, nor of the
    first number; on the quick path (no quotes) and through the csv reader alike."""
    for text in ("number\n{0}\n{1}\n", '"number"\n"{0}"\n{1}\n'):
        imported, rejected = dnc(write(tmp_path, "b.csv", text.format(*N), bom=True))
        assert (imported, rejected) == ({2: N[0], 3: N[1]}, []), text
    for text in ("{0}\n{1}\n", '"{0}"\n{1}\n'):
        imported, rejected = dnc(write(tmp_path, "b.csv", text.format(*N), bom=True))
        assert (imported, rejected) == ({1: N[0], 2: N[1]}, []), text


def test_dnc_headerless_numbers_are_data_from_line_1(tmp_path):
    imported, rejected = dnc(write(tmp_path, "n.csv", f"{N[0]},Li\n13800138001,Wang\n"))
    assert (imported, rejected) == ({1: N[0], 2: "13800138001"}, [])


@pytest.mark.parametrize("first", [f"Alice,{N[0]}", "Contact,Name", "numbers here", "", '"number'])
def test_dnc_first_row_neither_header_nor_number_refuses_the_file(tmp_path, first):
    """A headerless `Alice,+86...` file lost its first row as a 'header' (uncounted)
    and had every other rejected; now the file is refused whole, naming the headers."""
    for quoted in (False, True):  # the quick path, and the csv reader's (a quote further down)
        path = write(tmp_path, "x.csv", f"{first}\nBob,{N[1]}\n" + ('"Carol",1\n' if quoted else ""))
        with pytest.raises(DncFileError) as exc:
            _Source(path, "CN").chunks(2, 2).__next__()
        msg = str(exc.value)
        assert "Nothing was imported" in msg
        if first != '"number':
            assert msg.startswith("line 1 (") and "Accepted number column headers: number, phone" in msg
            assert "手机号" in msg


# -- lead files ----------------------------------------------------------------------

def leads(tmp_path, text, bom=False):
    r = parse_leads(write(tmp_path, "leads.csv", text, bom), "CN")
    return {x.line: (x.number, x.subject) for x in r.leads}, [(x.line, x.value, x.why) for x in r.rejects], r.rows


def test_leads_quote_left_open_to_the_end(tmp_path):
    got, rej, rows = leads(tmp_path, f'number,subject\n{N[0]},a\n"{N[1]},b\n{N[2]},c\n{N[3]},d\n')
    assert got == {2: (N[0], "a")} and rows == 2
    assert [(ln, v) for ln, v, _ in rej] == [(3, f"{N[1]},b")]
    assert rej[0][2].startswith("lines 3-5: a quote opened on line 3 is not closed")
    accounted(5, True, got, [(ln, w) for ln, _, w in rej])


def test_leads_quote_left_open_in_the_middle(tmp_path):
    got, rej, _ = leads(tmp_path, f'number,subject\n{N[0]},a\n"{N[1]},b\n{N[2]}",c\n{N[3]},d\n')
    assert got == {2: (N[0], "a"), 5: (N[3], "d")}
    assert [(ln, w.split(":")[0]) for ln, _, w in rej] == [(3, "lines 3-4")]
    accounted(5, True, got, [(ln, w) for ln, _, w in rej])


def test_leads_quote_left_open_on_the_last_line(tmp_path):
    got, rej, _ = leads(tmp_path, f'number,subject\n{N[0]},a\n"{N[1]},b\n')
    assert got == {2: (N[0], "a")}
    assert rej[0][:2] == (3, f"{N[1]},b") and rej[0][2].startswith("line 3: a quote opened on line 3 is not closed")


def test_leads_quoted_comma_bom_and_headers(tmp_path):
    got, rej, _ = leads(tmp_path, f'number,name,subject\n"{N[0]}","Li, Lei",x\n', bom=True)
    assert (got, rej) == ({2: (N[0], "x")}, [])
    for header in ("姓名,手机号", "Name,Phone Number"):
        got, rej, _ = leads(tmp_path, f"{header}\nLi,{N[0]}\n")
        assert (got, rej) == ({2: (N[0], "")}, []), header


def test_leads_headerless(tmp_path):
    got, rej, _ = leads(tmp_path, f"{N[0]},Li\n{N[1]},Wang\n")
    assert (got, rej) == ({1: (N[0], ""), 2: (N[1], "")}, [])
    for first in (f"Alice,{N[0]}", '"number'):
        with pytest.raises(LeadFileError) as exc:
            leads(tmp_path, f"{first}\nBob,{N[1]}\n")
        assert "Nothing was imported" in str(exc.value)


def test_dnc_rejected_row_at_a_chunk_boundary_and_after_a_resume(tmp_path):
    """The reader looks one record ahead (for a quote still open at the end): a row
    rejected as read that opens the next chunk, or follows the rows a resumed import
    skips, is still reported, never handed to the workers as a number."""
    text = f'number\n{N[0]}\n{N[1]}\n"{N[2]}\n{N[3]}\n{N[4]}"\n{N[5]}\n"{N[6]}\n{N[7]}\n'
    path = write(tmp_path, "c.csv", text)
    for size in (1, 2, 3, 4):
        src = _Source(path, "CN")
        try:
            seen = []
            for n, parts in src.chunks(size, 1):
                for part in parts:
                    seen += [(p[0], type(p[1]).__name__) for p in part[1]] if part[0] == "rejected" else [
                        (ln, type(raw).__name__) for ln, raw in zip(part[1], part[2])]
        finally:
            src.close()
        assert sorted(seen) == [(2, "str"), (3, "str"), (4, "str"), (7, "str"), (8, "str")], size
    imported, rejected = dnc(path)
    assert imported == {2: N[0], 3: N[1], 7: N[5]}
    assert [(ln, w.split(":")[0]) for ln, _, w in rejected] == [(4, "lines 4-6"), (8, "lines 8-9")]
    for skip in (1, 2, 3, 4):
        src = _Source(path, "CN")
        try:
            assert src.skip(skip) == skip
            rest = [p for n, parts in src.chunks(2, 1) for p in parts]
        finally:
            src.close()
        bad = [r[0] for p in rest if p[0] == "rejected" for r in p[1]]
        assert all(type(raw) is str for p in rest if p[0] == "rows" for raw in p[2]), skip
        assert bad == [ln for ln in (4, 8) if ln > [2, 3, 4, 7][skip - 1]], skip
