"""``dialguard-agi-outcomes``: call outcomes from Asterisk to the guard, with no
second AGI session per call (issue 21).

The dialplan's hangup handler (``[dialguard-report]``) runs one
``CELGenUserEvent(dialguard_outcome,v1|decision id|call id|DIALSTATUS|
ANSWEREDTIME|billsec|HANGUPCAUSE|AMDSTATUS|SIP code|DIALGUARD_OUTCOME[|subjects])``
(subjects: DIALGUARD_SUBJECTS, the other subjects discussed, ";"-separated:
each one's post-conversation quiet period starts too; a line without it is
read as before).
Asterisk's CEL engine (cel.conf: USER_DEFINED events only) hands it to
cel_custom, which appends one line to a file (cel_custom.conf). This process
reads the new lines every ``--poll-s`` (0.1 s) and applies each outcome with
``Engine.report_outcome`` (outcome.lua: the caller-ID lease released, the
quiet periods started, the audit record written).

Exactly once: the file is Asterisk's durable record, written whether this
process runs or not; the byte offset of the last applied line is saved in a
state file after every batch, so a restart (or a crash) catches up from there.
A line applied twice (a crash after applying it, before saving the offset) is
harmless: outcome.lua marks the call record reported and a second report
changes nothing and writes no audit record.

Time: an outcome applied more than a second late (catch-up) is dated when
Asterisk wrote it (the event time in the line), on the engine's clock:
``engine.now() - lag``; one applied at once is dated ``engine.now()``.

Rotation: past ``--rotate-mb`` with everything read, the file is renamed to
``<file>.old``; Asterisk opens the file for every record, so its next record
starts a new file. The old one is read to its end a second later (records in
flight when it was renamed), then deleted. A restart finishes a ``.old`` first.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from dialguard.decision.models import OUTCOME_RESULTS, Outcome
from dialguard.subjects import parse_subjects, report_other_subjects

from .handlers.report import _int, classify, sip_code
from .logs import setup_logging

log = logging.getLogger("dialguard.agi.outcomes")

EVENT = "dialguard_outcome"
DEFAULT_FILE = "/var/log/asterisk/cel-custom/dialguard-outcomes.csv"
DEFAULT_STATE = "/var/lib/dialguard/outcomes.offset"
# An outcome applied later than this after Asterisk wrote it is dated back.
LATE_S = 1.0
# Time Asterisk gets to finish a record it began writing before the rename.
ROTATE_SETTLE_S = 1.0
# Outcomes applied together (one write to Redis, one wake-up of it), at most.
APPLY_TOGETHER = 64


@dataclass(frozen=True)
class OutcomeEvent:
    decision_id: str
    call_id: str
    outcome: Outcome
    at: float | None  # epoch seconds Asterisk wrote it (None: unknown)
    subjects: tuple = ()  # other subjects discussed (dialguard/subjects.py)


class BadLine(ValueError):
    pass


def parse_line(line: str, conversation_min_s: int = 1) -> OutcomeEvent | None:
    """One line of the CEL file -> an outcome; None for another event type;
    BadLine for a line of ours that cannot be used."""
    try:
        row = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        raise BadLine("not CSV") from None
    if len(row) != 3:
        raise BadLine(f"{len(row)} columns, 3 expected")
    when, kind, extra = row
    if kind != EVENT:
        return None
    try:
        text = json.loads(extra)["extra"]
    except (ValueError, KeyError, TypeError):
        raise BadLine("extra is not CEL's {\"extra\": ...}") from None
    f = str(text).split("|")
    if f[0] != "v1" or len(f) not in (10, 11):
        raise BadLine(f"{f[0][:8]!r} with {len(f)} fields, v1 with 10 or 11 expected")
    _, decision_id, call_id, dialstatus, answered, billsec, cause, amd, sip, override = f[:10]
    try:
        subjects = tuple(parse_subjects(f[10])) if len(f) == 11 else ()
    except ValueError as exc:  # the outcome itself still counts
        log.warning("outcome of %s: subjects ignored: %s", call_id, exc)
        subjects = ()
    if not decision_id or not call_id:
        raise BadLine("no decision id or call id")
    if override and override not in OUTCOME_RESULTS:
        override = ""  # unknown words are ignored, as the report handler's query check would refuse them
    outcome = classify(dialstatus, _int(answered), _int(billsec), _int(cause), amd,
                       conversation_min_s, sip_code(sip))
    if override:
        outcome = Outcome(result=override, talk_s=outcome.talk_s, hangup_cause=outcome.hangup_cause,
                          sip_code=outcome.sip_code)
    try:
        at = float(when) if when else None
    except ValueError:
        at = None
    return OutcomeEvent(decision_id, call_id, outcome, at, subjects)


class State:
    """The offset of the last applied line, and the file (inode) it belongs to."""

    def __init__(self, path: Path):
        self.path = path
        self.inode: int | None = None
        self.offset = 0

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            self.inode, self.offset = data.get("inode"), int(data.get("offset", 0))
        except FileNotFoundError:
            pass
        except (ValueError, OSError) as exc:
            # Replaying from 0 is safe (a second report changes nothing).
            log.warning("unreadable state %s (%r): reading the file from its start", self.path, exc)

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"inode": self.inode, "offset": self.offset}))
        os.replace(tmp, self.path)


class OutcomeReader:
    def __init__(self, engine, path: Path, state: Path, *, poll_s: float = 0.1,
                 rotate_bytes: int = 64 << 20, conversation_min_s: int = 1, retry_s: float = 1.0):
        self.engine = engine
        self.path = Path(path)
        self.old = self.path.with_name(self.path.name + ".old")
        self.state = State(Path(state))
        self.poll_s = poll_s
        self.rotate_bytes = rotate_bytes
        self.conversation_min_s = conversation_min_s
        self.retry_s = retry_s
        self.applied = 0
        self.bad = 0
        self.unmatched = 0
        self._check_old = True

    async def _apply(self, ev: OutcomeEvent) -> None:
        now = await self.engine.now()
        if ev.at is not None:
            # Caught up late (the reader was away): dated when Asterisk wrote it.
            lag = time.time() - ev.at
            if lag > LATE_S:
                now = now - timedelta(seconds=lag)
        matched = await self.engine.report_outcome(ev.call_id, ev.outcome, now=now)
        if matched and ev.subjects:
            await report_other_subjects(self.engine, ev.call_id, ev.outcome, list(ev.subjects), now=now)
        self.applied += 1
        if not matched:
            # Already applied (a replay) or unknown: counted, one line a batch.
            self.unmatched += 1

    async def _apply_all(self, events: list[OutcomeEvent]) -> None:
        """Apply outcomes together: their scripts reach Redis in one write (the
        engine's pipelined client) and run in one wake-up of Redis, in the
        order of the file, instead of a round trip each. Those that failed
        (Redis away) are retried until they succeed; the saved offset stays
        before the group meanwhile (a restart applies it again: a second report
        changes nothing)."""
        while True:
            results = await asyncio.gather(*(self._apply(ev) for ev in events), return_exceptions=True)
            for r in results:
                if isinstance(r, asyncio.CancelledError):
                    raise r
            failed = [(ev, r) for ev, r in zip(events, results) if isinstance(r, BaseException)]
            if not failed:
                return
            self.state.save()
            log.warning("could not apply the outcome of %d calls (call %s: %r): retrying in %.1f s",
                        len(failed), failed[0][0].call_id, failed[0][1], self.retry_s)
            await asyncio.sleep(self.retry_s)
            events = [ev for ev, _ in failed]

    async def _drain(self, path: Path) -> bool:
        """Apply the complete lines of `path` after the saved offset. False if
        the file is missing. Engine errors are retried (the offset stays)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            st = os.fstat(fd)
            if st.st_ino != self.state.inode:
                self.state.inode, self.state.offset = st.st_ino, 0  # a new file
            if st.st_size < self.state.offset:
                log.warning("%s shrank below the saved offset: reading it from its start", path)
                self.state.offset = 0
            if st.st_size == self.state.offset:
                return True
            os.lseek(fd, self.state.offset, os.SEEK_SET)
            data = b""
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        end = data.rfind(b"\n")
        if end < 0:
            return True  # a record still being written
        pos = self.state.offset
        unmatched = self.unmatched
        group: list[OutcomeEvent] = []
        for raw in data[:end + 1].splitlines(keepends=True):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            try:
                ev = parse_line(line, self.conversation_min_s) if line else None
            except BadLine as exc:
                self.bad += 1
                log.error("unusable outcome line at byte %d of %s: %s", pos, path, exc)
                ev = None
            if ev is not None:
                group.append(ev)
            pos += len(raw)
            if len(group) >= APPLY_TOGETHER:
                await self._apply_all(group)
                group = []
                self.state.offset = pos
        if group:
            await self._apply_all(group)
        self.state.offset = pos
        self.state.save()
        if self.unmatched > unmatched:
            log.info("%d outcomes matched no unreported allowed call (already applied, or unknown)",
                     self.unmatched - unmatched, extra={"fields": {"event": "outcome_unmatched",
                                                                   "count": self.unmatched - unmatched}})
        return True

    async def _finish_old(self) -> None:
        """A renamed file: read it to its end, then delete it."""
        await asyncio.sleep(ROTATE_SETTLE_S)
        await self._drain(self.old)
        self.old.unlink(missing_ok=True)
        self.state.inode, self.state.offset = None, 0
        self.state.save()

    async def step(self) -> None:
        if self._check_old:  # left by a reader that stopped while rotating
            self._check_old = False
            if self.old.exists():
                await self._finish_old()
        # Most polls find nothing new: one stat, no open, no state write.
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if st.st_ino == self.state.inode and st.st_size == self.state.offset < self.rotate_bytes:
            return
        await self._drain(self.path)
        if self.state.offset >= self.rotate_bytes:
            try:
                if os.stat(self.path).st_size == self.state.offset:
                    os.rename(self.path, self.old)
                    await self._finish_old()
            except FileNotFoundError:
                pass

    async def run(self, stop: asyncio.Event | None = None) -> None:
        self.state.load()
        stop = stop or asyncio.Event()
        log.info("reading outcomes from %s (state %s, offset %d)", self.path, self.state.path, self.state.offset)
        while not stop.is_set():
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outcome reader step failed; going on")
            # A plain sleep: a wait_for() a poll costs a task and a timer.
            await asyncio.sleep(self.poll_s)


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    ap = argparse.ArgumentParser(prog="dialguard-agi-outcomes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", default=env("DIALGUARD_OUTCOMES_FILE", DEFAULT_FILE),
                    help="Asterisk's CEL file of the guard's outcomes (cel_custom.conf)")
    ap.add_argument("--state", default=env("DIALGUARD_OUTCOMES_STATE", DEFAULT_STATE),
                    help="where the offset of the last applied line is kept")
    ap.add_argument("--poll-s", type=float, default=float(env("DIALGUARD_OUTCOMES_POLL_S", "0.1")))
    ap.add_argument("--rotate-mb", type=float, default=float(env("DIALGUARD_OUTCOMES_ROTATE_MB", "64")))
    ap.add_argument("--conversation-min-s", type=int, default=int(env("DIALGUARD_CONVERSATION_MIN_S", "1")))
    ap.add_argument("--log-level", default=env("DIALGUARD_LOG_LEVEL", "INFO"))
    return ap


async def serve(args) -> int:
    import signal

    from .engines import default_factory

    engine = None
    while engine is None:
        try:
            engine = await default_factory()
        except Exception as exc:  # Redis away at start: the file keeps the outcomes meanwhile
            log.error("engine could not start (%r): retrying in 1 s", exc)
            await asyncio.sleep(1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = OutcomeReader(engine, Path(args.file), Path(args.state), poll_s=args.poll_s,
                           rotate_bytes=int(args.rotate_mb * (1 << 20)),
                           conversation_min_s=args.conversation_min_s)
    try:
        await reader.run(stop)
    finally:
        await engine.close()
    log.info("stopped after %d outcomes (%d unusable lines)", reader.applied, reader.bad)
    return 0


def main(argv: list[str] | None = None) -> int:
    from dialguard.config import ConfigError, require_secrets

    args = build_parser().parse_args(argv)
    os.umask(0o077)
    try:
        require_secrets("dialguard-agi-outcomes")
    except ConfigError as exc:
        print(f"dialguard-agi-outcomes: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level)
    Path(args.state).parent.mkdir(parents=True, exist_ok=True)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(args))
    return uvloop.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
