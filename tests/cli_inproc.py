"""`dialguard` commands run inside the test process, as a subprocess would run them.

A `python -m dialguard.cli` process costs about a second of CPU before the
command starts (imports): tests that run dozens of commands to check what the
commands do, not how the process starts, run them here instead (about 10 ms).
Every entry point keeps tests that start the real process (exit codes of a
failed start, tracebacks, signals, `dialer run`, the installed `dialguard`).

Each command gets what a fresh process would: the environment given (and only
it), its own stdout and stderr, the process umask and the CLI's per-process
flags restored afterwards, and a thread of its own (the commands call
asyncio.run, which cannot run inside the test's event loop). The result is a
subprocess.CompletedProcess like subprocess.run(..., capture_output=True,
text=True) returns.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import threading
import traceback
from collections.abc import Mapping, Sequence

_lock = threading.Lock()  # one command at a time: the environment and umask are the process's


@contextlib.contextmanager
def _environment(env: Mapping[str, str]):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60,
        cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """`dialguard ARGS` with environment env (default: this process's), in folder cwd."""
    from dialguard import breakglass, ids
    from dialguard.cli.main import app

    args = [str(a) for a in args]
    result: dict = {}

    def command() -> None:
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                app(args=args, prog_name="dialguard", standalone_mode=True)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, int) and exc.code is not None:
                    print(exc.code, file=err)
            except BaseException:  # noqa: BLE001 - what the interpreter would print, exit code 1
                traceback.print_exc(file=err)
                code = 1
        result.update(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())

    with _lock, _environment(dict(os.environ if env is None else env)):  # a copy: os.environ is cleared
        umask = os.umask(0o022)
        os.umask(umask)
        flags = breakglass.requested, ids.BREAK_GLASS
        here = os.getcwd()
        try:
            if cwd is not None:
                os.chdir(cwd)
            t = threading.Thread(target=command, name="dialguard-cli", daemon=True)
            t.start()
            t.join(timeout)
            if t.is_alive():
                raise subprocess.TimeoutExpired(["dialguard", *args], timeout)
        finally:
            os.chdir(here)
            os.umask(umask)
            breakglass.requested, ids.BREAK_GLASS = flags
    return subprocess.CompletedProcess(["dialguard", *args], result["returncode"], result["stdout"],
                                       result["stderr"])
