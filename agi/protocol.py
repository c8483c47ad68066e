"""The AGI wire protocol as Asterisk's res_agi speaks it, without any I/O.

What Asterisk sends first (FastAGI adds the two ``agi_network*`` lines)::

    agi_network: yes
    agi_network_script: check?campaign=c1
    agi_request: agi://127.0.0.1:14573/check?campaign=c1
    agi_channel: PJSIP/agent-00000001
    ...
    agi_arg_1: +8613800138000
    <empty line>

Then the script writes one command per line and reads one reply per command:
``200 result=1``, ``510 Invalid or unknown command``, ``511 Command Not
Permitted on a dead channel``, ``520 ...`` or the multi-line
``520-Invalid command syntax.  Proper usage follows:`` ... ``520 End of proper
usage.``. When the channel hangs up during a FastAGI session Asterisk writes an
unsolicited ``HANGUP`` line *between* replies; it is not a reply.

res_agi reads one command, answers it, then waits on the socket for the next:
commands written ahead sit in its stdio buffer unread until more bytes arrive
(measured on Asterisk 22: a second command written with the first is only
answered when a HANGUP wakes it up). So at most one command may be in flight;
what saves round trips is fewer commands (:func:`mset_command`) and writing
one early, before the decision, whose reply is read after it.

Command arguments are split by Asterisk's ``parse_args``: whitespace separates
words, double quotes group, and a backslash makes the next character literal.
Asterisk reads a command into a 2048-byte buffer, so a longer command would be
cut in two: :func:`set_variable_command` keeps every command shorter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

# Limits on what we accept from the peer (a real Asterisk stays far below).
MAX_LINE_BYTES = 8192  # one line, newline included
MAX_ENV_LINES = 128  # lines in the agi_* block, the terminating empty line excluded
MAX_USAGE_LINES = 64  # continuation lines of a 520- reply
MAX_UNSOLICITED_HANGUPS = 4  # HANGUP lines tolerated while waiting for one reply
# res_agi reads commands with fgets into char buf[AGI_BUF_LEN=2048].
MAX_COMMAND_BYTES = 2047  # newline included

_ENV_KEY = re.compile(r"agi_[a-z0-9_]{1,64}")
_ARG_KEY = re.compile(r"agi_arg_([1-9][0-9]{0,2})")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,79}")
_REPLY = re.compile(r"(?P<code>[0-9]{3})(?P<sep>[ -]|$)(?P<rest>.*)", re.S)
_RESULT = re.compile(r"result=(?P<result>\S*)(?:\s+\((?P<data>.*?)\))?(?P<tail>.*)", re.S)
# Values that decide what we do must be valid UTF-8; the others (caller name...)
# are informational and decoded leniently so an odd name never denies a call.
_STRICT_KEYS = frozenset({"agi_network_script", "agi_request", "agi_uniqueid"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BYTES = bytes(range(32)) + b"\x7f"
_KEY_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789_"
# Script names: what may follow agi://host:port/ before '?'.
_SCRIPT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


class ProtocolError(Exception):
    """The peer broke the protocol (malformed, oversized, truncated or hostile)."""


class SessionClosed(ProtocolError):
    """The peer closed the connection (EOF) where we expected more."""


@dataclass
class Reply:
    """One reply to one command."""

    code: int
    result: str | None = None  # the value after result= on a 200 reply
    data: str | None = None  # the parenthesised data after result=, if any
    text: str = ""  # the whole first line, without the newline
    usage: list[str] = field(default_factory=list)  # 520- continuation lines

    @property
    def ok(self) -> bool:
        return self.code == 200


class EnvParser:
    """Incremental parser of the agi_* block; feed it raw lines (bytes).

    ``feed`` returns True once the terminating empty line was seen. Every
    violation raises :class:`ProtocolError`; the caller closes the session.
    """

    def __init__(self, max_lines: int = MAX_ENV_LINES, max_line_bytes: int = MAX_LINE_BYTES):
        self.max_lines = max_lines
        self.max_line_bytes = max_line_bytes
        self.env: dict[str, str] = {}
        self.lines = 0
        self.done = False

    def feed(self, raw: bytes) -> bool:
        if self.done:
            raise ProtocolError("data after the end of the environment block")
        if not raw:
            raise SessionClosed("connection closed inside the environment block")
        if len(raw) > self.max_line_bytes:
            raise ProtocolError(f"environment line longer than {self.max_line_bytes} bytes")
        if not raw.endswith(b"\n"):
            raise SessionClosed("connection closed inside an environment line")
        line = raw[:-1]
        if line[-1:] == b"\r":
            line = line[:-1]
        if not line:
            if not self.env:
                raise ProtocolError("empty environment block")
            self.done = True
            return True
        self.lines += 1
        if self.lines > self.max_lines:
            raise ProtocolError(f"more than {self.max_lines} environment lines")
        key_b, sep, value_b = line.partition(b":")
        if not sep:
            raise ProtocolError("environment line without ':'")
        # Byte checks (translate deletes the allowed bytes: nothing may be
        # left) instead of a regex and a decode per line: the block is ~25
        # lines a session, and this was ~4 us a line.
        if not (4 < len(key_b) <= 68 and key_b.startswith(b"agi_") and not key_b[4:].translate(None, _KEY_BYTES)):
            try:
                key_b.decode("ascii")
            except UnicodeDecodeError:
                raise ProtocolError("non-ASCII environment key") from None
            raise ProtocolError(f"bad environment key {key_b.decode('ascii')[:40]!r}")
        key = key_b.decode("ascii")
        if key in self.env:
            raise ProtocolError(f"duplicate environment key {key}")
        if value_b[:1] == b" ":
            value_b = value_b[1:]
        if key in _STRICT_KEYS or key.startswith("agi_arg_"):
            try:
                value = value_b.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(f"{key} is not valid UTF-8") from None
            # A control character is one byte below 0x20 or 0x7f in UTF-8.
            if len(value_b.translate(None, _CONTROL_BYTES)) != len(value_b):
                raise ProtocolError(f"control character in {key}")
        else:
            value = value_b.decode("utf-8", "replace")
        self.env[key] = value
        return False


# One line of a clean environment block, anchored at a line start (re.M):
# every line of the block matched <=> as many matches as lines.
_ENV_LINE = re.compile(r"^(agi_[a-z0-9_]{1,64}): ([^\n]*)\n", re.M)


def parse_env_fast(block: bytes, max_lines: int = MAX_ENV_LINES,
                     max_line_bytes: int = MAX_LINE_BYTES) -> dict[str, str] | None:
    """The environment block in one pass, for the common clean case: `block`
    is every line up to the terminating empty line, newlines included (without
    that line). None when anything is unusual (CR, a long line, an odd key, a
    duplicate, a value that needs checking): the caller then feeds the lines to
    :class:`EnvParser`, which says exactly what is wrong. Same result as
    EnvParser for what it accepts. A block with no control character but its
    newlines, valid UTF-8 and shorter than a line may be (what Asterisk sends)
    takes a few C calls in all (translate, decode, findall: 13 against 31 us a
    block of 27 lines); any other goes line by line."""
    n = block.count(b"\n")
    if not n or n > max_lines:
        return None
    if len(block) < max_line_bytes and len(block.translate(None, _CONTROL_BYTES)) == len(block) - n:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            pairs = _ENV_LINE.findall(text)
            if len(pairs) != n:
                return None  # a line that is not `agi_key: value`
            env = dict(pairs)
            return env if len(env) == n else None  # else a duplicate key
    return _parse_env_lines(block, max_lines, max_line_bytes)


def _parse_env_lines(block: bytes, max_lines: int = MAX_ENV_LINES,
                     max_line_bytes: int = MAX_LINE_BYTES) -> dict[str, str] | None:
    """parse_env_fast line by line: blocks with a control character, invalid
    UTF-8 (a lenient value) or as long as a line may be."""
    lines = block.split(b"\n")
    lines.pop()  # after the last newline
    if not lines or len(lines) > max_lines or b"\r" in block:
        return None
    env: dict[str, str] = {}
    strict = _STRICT_KEYS
    for line in lines:
        key_b, sep, value_b = line.partition(b": ")
        if (not sep or len(line) >= max_line_bytes or not 4 < len(key_b) <= 68
                or key_b[:4] != b"agi_" or key_b[4:].translate(None, _KEY_BYTES)):
            return None
        key = key_b.decode("ascii")
        if key in env:
            return None
        if key in strict or key.startswith("agi_arg_"):
            if len(value_b.translate(None, _CONTROL_BYTES)) != len(value_b):
                return None
            try:
                env[key] = value_b.decode("utf-8")
            except UnicodeDecodeError:
                return None
        else:
            env[key] = value_b.decode("utf-8", "replace")
    return env


def env_args(env: dict[str, str]) -> list[str]:
    """agi_arg_1..agi_arg_N as a list; a gap in the numbering is a protocol error."""
    numbered: dict[int, str] = {}
    for key, value in env.items():
        # agi_arg_N, N = [1-9][0-9]{0,2} (string tests: cheaper than a regex a key)
        if key.startswith("agi_arg_"):
            n = key[8:]
            if 0 < len(n) <= 3 and n.isdigit() and n[0] != "0":
                numbered[int(n)] = value
    if not numbered:
        return []
    n = max(numbered)
    if sorted(numbered) != list(range(1, n + 1)):
        raise ProtocolError("agi_arg_N numbering has gaps")
    return [numbered[i] for i in range(1, n + 1)]


@dataclass(frozen=True)
class ScriptRequest:
    """What to run: a handler name, its query arguments, its positional arguments."""

    name: str
    query: dict[str, str]
    args: list[str]


_scripts: dict[str, tuple[str, dict[str, str]]] = {}


def parse_script(script: str) -> tuple[str, dict[str, str]]:
    """``check?campaign=c1&agent=a7`` -> ("check", {"campaign": "c1", "agent": "a7"}).

    Accepts an optional leading '/', rejects odd names and repeated keys.
    A dialplan sends a few distinct scripts over and over: their answers are
    kept (a copy of the query each time: the caller may change it).
    """
    hit = _scripts.get(script)
    if hit is None:
        hit = _parse_script(script)
        if len(_scripts) >= 1024:
            _scripts.clear()
        _scripts[script] = hit
    return hit[0], dict(hit[1])


def _parse_script(script: str) -> tuple[str, dict[str, str]]:
    path, _, qs = script.partition("?")
    name = path.strip("/")
    if not _SCRIPT_NAME.fullmatch(name):
        raise ProtocolError(f"bad script name {name[:40]!r}")
    query: dict[str, str] = {}
    if qs:
        try:
            pairs = parse_qsl(qs, keep_blank_values=True, strict_parsing=True,
                              encoding="utf-8", errors="strict", max_num_fields=32)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"bad query string: {exc}") from None
        for k, v in pairs:
            if k in query:
                raise ProtocolError(f"repeated query argument {k[:40]!r}")
            query[k] = v
    return name, query


def fastagi_request(env: dict[str, str]) -> ScriptRequest:
    """The request of a FastAGI session: agi_network_script plus agi_arg_N."""
    script = env.get("agi_network_script")
    if script is None:
        raise ProtocolError("no agi_network_script (AGI(agi://host:port/NAME) expected)")
    name, query = parse_script(script)
    return ScriptRequest(name, query, env_args(env))


def classic_request(env: dict[str, str]) -> ScriptRequest:
    """The request of a classic AGI script: AGI(dialguard-agi,NAME[?q],ARG...)."""
    args = env_args(env)
    if not args:
        raise ProtocolError("no handler name in agi_arg_1")
    name, query = parse_script(args[0])
    return ScriptRequest(name, query, args[1:])


# What quote_arg drops: C0 controls and DEL (C1 and other code points stay).
_DROP_CONTROLS = dict.fromkeys([*range(32), 0x7F])


def quote_arg(value: str) -> str:
    """Quote one command argument so Asterisk's parse_args yields ``value`` back.

    Backslash and double quote are escaped; CR, LF and other control characters
    cannot travel inside a command line and are dropped.
    """
    cleaned = value.translate(_DROP_CONTROLS)  # C speed: was a generator over every character
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_variable_command(name: str, value: str) -> bytes:
    """``SET VARIABLE NAME "value"\\n``, shortened to fit Asterisk's buffer."""
    if not _VAR_NAME.fullmatch(name):
        raise ValueError(f"bad channel variable name {name!r}")
    return f"SET VARIABLE {name} {_quote_within(str(value), MAX_COMMAND_BYTES - len(name) - 15)}\n".encode()


def _quote_within(value: str, budget: int) -> str:
    """quote_arg(value), the value cut short if the quoted form exceeds budget
    bytes: only free text (a long subject) can get there, and a cut value is
    better than Asterisk splitting the line into two commands."""
    quoted = quote_arg(value)
    if len(quoted.encode()) <= budget:
        return quoted
    used = 2
    out = []
    for c in value:
        if c < " " or c == "\x7f":
            continue
        n = len(c.encode()) + (1 if c in '\\"' else 0)
        if used + n > budget:
            break
        used += n
        out.append(c)
    return quote_arg("".join(out))


# Values MSet carries unchanged through both parsers (res_agi's parse_args, then
# the application's argument splitter): reason codes, E.164, integers, ISO 8601
# UTC, hex ids. No quote, backslash, '=' or '$' (AGIEXECFULL would expand it).
_MSET_VALUE = re.compile(r"[A-Za-z0-9_+:.,\-]{0,256}")


_GOOD_NAMES: set[str] = set()  # variable names already checked (the handlers use a few)


def mset_command(pairs) -> bytes:
    """``EXEC MSet "N1=\\"v1\\",N2=\\"v2\\""``: several channel variables in one
    command (one round trip instead of one per variable), set in the given
    order. Each value is quoted for MSet so that a comma (the reasons list)
    stays inside its value. Raises ValueError for a name or value outside the
    safe sets (the caller then uses SET VARIABLE, which quotes anything)."""
    parts = []
    for name, value in pairs:
        value = "" if value is None else str(value)
        if name not in _GOOD_NAMES:
            if not _VAR_NAME.fullmatch(name):
                raise ValueError(f"bad channel variable name {name!r}")
            if len(_GOOD_NAMES) < 256:
                _GOOD_NAMES.add(name)
        if not _MSET_VALUE.fullmatch(value):
            raise ValueError(f"value of {name} not safe for MSet")
        parts.append(f'{name}="{value}"')
    if not parts:
        raise ValueError("MSet needs at least one variable")
    cmd = f"EXEC MSet {quote_arg(','.join(parts))}\n".encode()
    if len(cmd) > MAX_COMMAND_BYTES:
        raise ValueError("MSet command longer than Asterisk's buffer")
    return cmd


def mset_ok(reply: "Reply") -> bool:
    """MSet ran: ``200 result=0`` (res_agi's EXEC answers the application's
    return value; -2 means the application does not exist)."""
    return reply.code == 200 and reply.result == "0"


def verbose_command(message: str, level: int = 3) -> bytes:
    return f"VERBOSE {_quote_within(message, MAX_COMMAND_BYTES - 20)} {int(level)}\n".encode()


def is_hangup_line(line: str) -> bool:
    """The unsolicited notice Asterisk sends when the channel hangs up."""
    return line.strip() == "HANGUP"


def decode_reply_line(raw: bytes, max_line_bytes: int = MAX_LINE_BYTES) -> str:
    if not raw:
        raise SessionClosed("connection closed while waiting for a reply")
    if len(raw) > max_line_bytes:
        raise ProtocolError(f"reply line longer than {max_line_bytes} bytes")
    if not raw.endswith(b"\n"):
        raise SessionClosed("connection closed inside a reply line")
    return raw.decode("utf-8", "replace").rstrip("\r\n")


def parse_reply_head(line: str) -> tuple[Reply, bool]:
    """Parse the first line of a reply; the bool says whether 520- lines follow."""
    m = _REPLY.fullmatch(line)
    if not m:
        raise ProtocolError(f"unexpected reply {line[:60]!r}")
    code = int(m.group("code"))
    reply = Reply(code=code, text=line)
    if code == 200:
        r = _RESULT.match(m.group("rest").strip())
        if not r:
            raise ProtocolError(f"200 reply without result= {line[:60]!r}")
        reply.result = r.group("result")
        reply.data = r.group("data")
    return reply, (code == 520 and m.group("sep") == "-")


def is_usage_end(line: str) -> bool:
    """The last line of a multi-line 520 reply.

    Asterisk writes the usage text with "%s" and then "520 End of proper
    usage.": if the usage text lacks a final newline the end marker is glued to
    its last line, so look for it anywhere in the line.
    """
    return line.startswith("520 ") or "520 End of proper usage." in line


def format_utc(dt) -> str:
    """ISO 8601 UTC to the second, rounded up (``2025-03-04T01:00:00Z``).

    Rounded up so that a "next eligible" time is never earlier than the real one.
    """
    from datetime import timedelta, timezone

    if dt is None:
        return ""
    if dt.tzinfo is None:
        raise ValueError("naive datetime")
    dt = dt.astimezone(timezone.utc)
    if dt.microsecond:
        dt = dt.replace(microsecond=0) + timedelta(seconds=1)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
