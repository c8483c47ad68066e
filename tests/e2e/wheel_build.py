"""The wheel and venv of test_installed_wheel, built in the background.

Building the wheel, creating a venv and pip-installing the wheel with its
dependencies takes about 90 s, nearly all of it pip waiting on the package
index and on the disk, not on the CPU. Run as the fixture's setup, it was 90 s
of the critical path of `make test`. The session now starts it when it collects
test_installed_wheel (tests/conftest.py, pytest_collection_finish), in a
process of its own that runs the same three commands in a folder of its own;
the integration tests run meanwhile (one process, one of the two cores), and
the fixture waits for the build and checks the wheel and the venv as before.

Run alone: `python tests/e2e/wheel_build.py ROOT` builds ROOT/dist/*.whl and
ROOT/venv, its log in ROOT/build.log; exit code 0 when all three commands
succeeded.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE = "test_installed_wheel.py"  # the tests that use the build

_build: "Build | None" = None


def clean_env() -> dict[str, str]:
    """The stack's settings, without anything that would import this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return env


def real_clock(env: dict[str, str]) -> dict[str, str]:
    """env on the real clock, for pip: it fetches over TLS, whose certificates are
    checked against the clock, and `make test-dates` shifts it (libfaketime)."""
    return {k: v for k, v in env.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}


def build(root: Path, python: str = sys.executable) -> int:
    """The three commands, one after the other, their output to root/build.log."""
    steps = [
        ([python, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "-q", "-w", str(root / "dist")],
         real_clock(dict(os.environ))),
        (["python3", "-m", "venv", str(root / "venv")], real_clock(clean_env())),
    ]
    with open(root / "build.log", "ab") as log:
        for cmd, env in steps:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
            if r.returncode != 0:
                return r.returncode
        wheels = sorted((root / "dist").glob("dialguard-*.whl"))
        if len(wheels) != 1:
            log.write(f"expected one wheel in {root / 'dist'}, found {wheels}\n".encode())
            return 1
        cmd = [str(root / "venv" / "bin" / "pip"), "install", "-q", str(wheels[0])]
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=real_clock(clean_env()),
                              cwd=root).returncode


def _die_with_parent() -> None:
    """The build stops when the test process dies without its atexit (SIGTERM, SIGKILL)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Build:
    """One background build: its folder and process."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dialguard-wheel-"))
        self.proc = subprocess.Popen([sys.executable, __file__, str(self.root)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        atexit.register(self.discard)

    def wait(self, timeout: float = 900) -> tuple[int, str]:
        """The build's exit code and the tail of its log."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            rc = -1
        log = self.root / "build.log"
        return rc, (log.read_text(errors="replace")[-6000:] if log.exists() else "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def discard(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def wanted(nodeids: list[str]) -> bool:
    """Whether the session's selected tests use the build."""
    return any(n.split("::", 1)[0].endswith(MODULE) for n in nodeids)


def start_if_wanted(nodeids: list[str]) -> Build | None:
    """At the end of the collection: start the build when the selection uses it (once)."""
    global _build
    if _build is None and wanted(nodeids):
        _build = Build()
    return _build


def get() -> Build:
    """The session's build (started now when the collection did not start it)."""
    global _build
    if _build is None:
        _build = Build()
    return _build


if __name__ == "__main__":
    sys.exit(build(Path(sys.argv[1])))
