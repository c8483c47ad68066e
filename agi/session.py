"""One AGI session over an asyncio stream pair (a TCP socket or stdin/stdout)."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from . import protocol as p

log = logging.getLogger("dialguard.agi")


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...


class AGISession:
    """Reads the environment block, sends commands, reads their replies.

    ``hungup`` becomes True when Asterisk announced the hangup of the channel
    (an unsolicited ``HANGUP`` line); the session goes on (Asterisk still
    answers, with 511 for commands not allowed on a dead channel).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: Writer, *,
                 max_line_bytes: int = p.MAX_LINE_BYTES, max_env_lines: int = p.MAX_ENV_LINES):
        self.reader = reader
        self.writer = writer
        self.max_line_bytes = max_line_bytes
        self.max_env_lines = max_env_lines
        self.env: dict[str, str] = {}
        self.hungup = False
        self.commands_sent = 0
        # Commands written with send() whose replies are not read yet (at most
        # one: res_agi does not read ahead, see agi.protocol).
        self._unread = 0
        # Our own line buffer: the environment block (about 25 lines, one
        # segment) is split in one go instead of one readuntil() a line.
        self._buf = bytearray()
        self._eof = False

    def _pop_line(self) -> bytes | None:
        """The next complete line in the buffer (at EOF: the rest, maybe empty),
        None when more must be read. Never holds more than one overlong line."""
        buf = self._buf
        i = buf.find(b"\n")
        if i < 0:
            if len(buf) > self.max_line_bytes:
                raise p.ProtocolError(f"line longer than {self.max_line_bytes} bytes")
            if not self._eof:
                return None
            i = len(buf) - 1  # EOF: partial (maybe empty) line, rejected by the caller
        elif i > self.max_line_bytes:
            raise p.ProtocolError(f"line longer than {self.max_line_bytes} bytes")
        line = bytes(buf[:i + 1])
        del buf[:i + 1]
        return line

    async def _fill(self) -> None:
        data = await self.reader.read(65536)
        if data:
            self._buf += data
        else:
            self._eof = True

    async def _readline(self) -> bytes:
        while (line := self._pop_line()) is None:
            await self._fill()
        return line

    async def read_env(self) -> dict[str, str]:
        # Asterisk sends the block in one segment: parsed in one pass when it
        # is all there and clean, else line by line (exact errors).
        if not self._buf:
            await self._fill()
        buf = self._buf
        end = buf.find(b"\n\n")
        if end >= 0 and buf[:1] != b"\n":
            env = p.parse_env_fast(bytes(buf[:end + 1]), self.max_env_lines, self.max_line_bytes)
            if env is not None:
                del buf[:end + 2]
                self.env = env
                return env
        parser = p.EnvParser(self.max_env_lines, self.max_line_bytes)
        while True:
            line = self._pop_line()
            if line is None:
                await self._fill()
            elif parser.feed(line):
                break
        self.env = parser.env
        return self.env

    @staticmethod
    def _check_command(cmd: bytes) -> None:
        if not cmd.endswith(b"\n") or b"\n" in cmd[:-1] or len(cmd) > p.MAX_COMMAND_BYTES:
            raise ValueError("a command is one line of at most 2047 bytes")

    def send(self, cmd: bytes) -> None:
        """Write one command now, read its reply later with :meth:`collect`
        (e.g. the fail-closed DENY, answered while the engine decides)."""
        self._check_command(cmd)
        if self._unread:
            raise RuntimeError("res_agi answers one command at a time: collect() first")
        self.writer.write(cmd)
        self.commands_sent += 1
        self._unread += 1

    async def collect(self) -> p.Reply | None:
        """The reply to the command written by :meth:`send` (None if none is due)."""
        if not self._unread:
            return None
        await self.writer.drain()
        self._unread = 0
        return await self._read_reply()

    async def command(self, cmd: bytes) -> p.Reply:
        """Send one command line and return its reply, skipping HANGUP notices.

        A reply still due for an earlier :meth:`send` is read first (on error
        paths): replies stay in step with their commands."""
        self._check_command(cmd)
        await self.collect()
        self.writer.write(cmd)
        await self.writer.drain()
        self.commands_sent += 1
        return await self._read_reply()

    async def _read_reply(self) -> p.Reply:
        hangups = 0
        while True:
            raw = await self._readline()
            if raw == b"200 result=0\n":  # what MSet and SET VARIABLE answer: parse_reply_head's result, no regex
                return p.Reply(200, "0", None, "200 result=0")
            line = p.decode_reply_line(raw, self.max_line_bytes)
            if p.is_hangup_line(line):
                self.hungup = True
                hangups += 1
                if hangups > p.MAX_UNSOLICITED_HANGUPS:
                    raise p.ProtocolError("HANGUP flood")
                continue
            reply, multiline = p.parse_reply_head(line)
            if multiline:
                for _ in range(p.MAX_USAGE_LINES):
                    more = p.decode_reply_line(await self._readline(), self.max_line_bytes)
                    reply.usage.append(more)
                    if p.is_usage_end(more):
                        break
                else:
                    raise p.ProtocolError("520 usage reply without an end")
            if reply.code == 511:
                self.hungup = True
            return reply

    async def set_variable(self, name: str, value: object) -> p.Reply:
        return await self.command(p.set_variable_command(name, "" if value is None else str(value)))

    async def mset(self, pairs) -> p.Reply:
        """Several variables in one command (EXEC MSet); ValueError for unsafe values."""
        return await self.command(p.mset_command(pairs))

    async def verbose(self, message: str, level: int = 3) -> p.Reply:
        return await self.command(p.verbose_command(message, level))
