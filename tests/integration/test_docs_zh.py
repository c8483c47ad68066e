"""Every `dialguard` command of the Chinese operator guide (docs/zh/) runs.

The commands of each ```bash block are run in order, as an operator would
type them, against the stack's Redis under a key prefix of their own and a
PostgreSQL database of the module's own cluster (so `dnc add` and the audit
reads never touch the shared database). A command that fails makes the test
fail with its output: the guide and the program cannot drift apart.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

import cli_inproc

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "zh"
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)
SHELL = re.compile(r"[|&;<>()$`*?~!#\\\[\]{}]")  # what bash reads otherwise than shlex.split


def guide_commands() -> list[tuple[str, str]]:
    out = []
    for md in sorted(DOCS.glob("*.md")):
        for block in BLOCK.findall(md.read_text(encoding="utf-8")):
            out += [(md.name, line.strip()) for line in block.splitlines() if line.strip().startswith("dialguard ")]
    return out


def test_the_guide_has_commands_in_every_chapter():
    per_file = {name for name, _ in guide_commands()}
    assert per_file == {"quickstart.md", "integrate.md", "packs.md", "operations.md", "runbook.md"}
    assert len(guide_commands()) >= 25


@pytest.fixture(scope="module")
def guide_db(cluster):
    from dialguard.audit import migrate as m
    from dialguard.audit.db import sql_dirs

    cluster.create_db("dgdoczh")
    with psycopg.connect(cluster.dsn("dgdoczh"), autocommit=True) as conn:
        m.migrate(conn, sql_dirs(), writers=["dg_service"])
    return cluster.dsn("dgdoczh", "dg_service")


def test_every_command_of_the_guide_runs(guide_db, tmp_path):
    # the host allows break-glass (tests/conftest.py), but the guide's commands must ask for it
    env = {**{k: v for k, v in os.environ.items() if k != "DIALGUARD_BREAK_GLASS"},
           "DIALGUARD_KEY_PREFIX": f"dgcli:zh{uuid.uuid4().hex[:8]}",
           "DIALGUARD_PG_DSN": guide_db,
           "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    conf_dir = tmp_path / "asterisk"
    conf_dir.mkdir()
    ran = 0
    for name, line in guide_commands():
        cmd = line.replace("/etc/asterisk", str(conf_dir))
        if SHELL.search(cmd):  # a pipe, a redirection, a variable: as the operator's shell runs it
            r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
        else:  # a plain command: in this process (tests/cli_inproc.py), as bash would split it
            r = cli_inproc.run(shlex.split(cmd)[1:], env=env, cwd=ROOT, timeout=120)
        assert r.returncode == 0, f"{name}: {line}\nexit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        ran += 1
    assert ran == len(guide_commands())
