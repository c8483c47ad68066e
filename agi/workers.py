"""``dialguard-agi-server --workers N``: N server processes on one port.

The parent binds the listening socket once and starts N workers
(``python -m agi.server ... --listen-fd FD``) that all accept on it: one
kernel accept queue, so a free worker takes the next session and a worker
that stops strands no queued connection (SO_REUSEPORT would give each worker
its own queue, lost with it). The parent is the process to signal (the dev
stack's single pid file): SIGTERM/SIGINT go to every worker, each finishes
its sessions in flight, the parent exits when all have. A worker that dies
on its own is started again (at most once a second). Workers die with the
parent (PR_SET_PDEATHSIG), so a killed parent leaves none behind.

Metrics: the workers run prometheus_client in multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, a fresh directory removed at exit); worker 0
serves ``/metrics`` and ``/healthz`` with the counters summed over all
workers (:mod:`dialguard.metrics`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

log = logging.getLogger("dialguard.agi")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # not Linux: the parent's SIGTERM still reaches the workers
        pass


def listen_socket(host: str, port: int) -> socket.socket:
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                               flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def supervise(args, n: int, argv: list[str]) -> int:
    try:
        sock = listen_socket(args.host, args.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    mdir = tempfile.mkdtemp(prefix="dialguard-agi-metrics-")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=mdir)
    base = [sys.executable, "-m", "agi.server", *argv]
    stopping = False
    procs: dict[int, subprocess.Popen] = {}
    started: dict[int, float] = {}

    def spawn(i: int) -> None:
        cmd = base + ["--workers", "1", "--listen-fd", str(sock.fileno()),
                      "--metrics-port", str(args.metrics_port if i == 0 else 0)]
        procs[i] = subprocess.Popen(cmd, env=env, pass_fds=(sock.fileno(),), preexec_fn=_die_with_parent)
        started[i] = time.monotonic()

    def on_signal(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for i in range(n):
        spawn(i)
    log.info("workers started", extra={"fields": {
        "event": "agi_workers", "workers": n, "pids": [p.pid for p in procs.values()],
        "host": args.host, "port": sock.getsockname()[1]}})
    deadline = None
    try:
        while True:
            alive = [p for p in procs.values() if p.poll() is None]
            if stopping:
                if not alive:
                    break
                deadline = deadline or time.monotonic() + args.session_timeout + 5
                if time.monotonic() > deadline:
                    for p in alive:
                        p.kill()
            else:
                for i, p in list(procs.items()):
                    if p.poll() is not None and time.monotonic() - started[i] >= 1.0:
                        log.error("worker %d (pid %d) exited with %s: starting it again", i, p.pid, p.returncode)
                        _mark_dead(p.pid, mdir)
                        spawn(i)
            time.sleep(0.1)
    finally:
        sock.close()
        shutil.rmtree(mdir, ignore_errors=True)
    codes = [p.returncode for p in procs.values()]
    log.info("workers stopped", extra={"fields": {"event": "agi_workers_stopped", "codes": codes}})
    # -SIGTERM: a worker stopped before it had installed its handler (still
    # starting: no session in flight)
    return 0 if all(c in (0, -signal.SIGTERM) for c in codes) else 1


def _mark_dead(pid: int, mdir: str) -> None:
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, mdir)
    except Exception:  # noqa: BLE001 - only the live gauges' files are concerned
        pass
