"""redis-py asyncio connections that cannot lose a cancel (Python 3.11).

redis-py 8.1.0 bounds a command's socket write with asyncio.wait_for when the
connection has a socket timeout (redis/asyncio/connection.py,
AbstractConnection.send_packed_command). On 3.11 wait_for runs the write in a task
of its own and loses a cancel that lands as that task completes (CPython gh-86296,
fixed in 3.12 only): the awaiting task goes on as if never cancelled. Its reads and
connects are bounded by asyncio.timeout (>= 3.11.3), which counts the cancels asked
and so never loses one; the write is the one place (tests/unit/test_redis_cancel.py
checks both, and notices an upgrade that changes them).

The classes below write under asyncio.timeout instead, with the same errors as
redis-py's (TimeoutError "Timeout writing to socket", ConnectionError on OSError,
the connection dropped on any other exception). dialguard.redisconn gives every pool
it builds one of them (`cancel_safe`), so every task awaiting Redis through
redis-py (FastAGI sessions, the outcome reader, the audit shipper, the console, the
dialer) is cancelled when asked.
"""

from __future__ import annotations

import asyncio
from typing import Iterable, Union

from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["CancelSafeWrites", "cancel_safe", "SAFE_CLASSES"]


class CancelSafeWrites:
    """Mixin before a redis-py asyncio connection class: send_packed_command bounded
    by asyncio.timeout, not asyncio.wait_for (the rest of it is redis-py 8.1.0's)."""

    async def send_packed_command(self, command: Union[bytes, str, Iterable[bytes]],
                                  check_health: bool = True) -> None:
        if not self.socket_timeout:  # redis-py writes without wait_for then
            return await super().send_packed_command(command, check_health)
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()
        try:
            if isinstance(command, str):
                command = command.encode()
            if isinstance(command, bytes):
                command = [command]
            async with asyncio.timeout(self.socket_timeout):
                await self._send_packed_command(command)
        except TimeoutError:  # before OSError, its base class
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)
            err_no, errmsg = ("UNKNOWN", e.args[0]) if len(e.args) == 1 else e.args[:2]
            raise RedisConnectionError(f"Error {err_no} while writing to socket. {errmsg}.") from e
        except BaseException:  # a cancel: what was written of the command is unknown
            await self.disconnect(nowait=True)
            raise


class CancelSafeConnection(CancelSafeWrites, Connection):
    pass


class CancelSafeSSLConnection(CancelSafeWrites, SSLConnection):
    pass


class CancelSafeUnixDomainSocketConnection(CancelSafeWrites, UnixDomainSocketConnection):
    pass


class CancelSafeSentinelManagedConnection(CancelSafeWrites, SentinelManagedConnection):
    pass


class CancelSafeSentinelManagedSSLConnection(CancelSafeWrites, SentinelManagedSSLConnection):
    pass


# redis-py's class (what a URL, ssl= or a Sentinel pool picks) -> ours
SAFE_CLASSES = {
    Connection: CancelSafeConnection,
    SSLConnection: CancelSafeSSLConnection,
    UnixDomainSocketConnection: CancelSafeUnixDomainSocketConnection,
    SentinelManagedConnection: CancelSafeSentinelManagedConnection,
    SentinelManagedSSLConnection: CancelSafeSentinelManagedSSLConnection,
}


def cancel_safe(pool):
    """`pool` (a redis.asyncio ConnectionPool, before its first connection) makes our
    class of the connection class it chose; a class we do not know is an error (it
    would write under wait_for)."""
    cls = pool.connection_class
    if not issubclass(cls, CancelSafeWrites):
        if cls not in SAFE_CLASSES:
            raise TypeError(f"no cancel-safe variant of {cls.__module__}.{cls.__name__}")
        pool.connection_class = SAFE_CLASSES[cls]
    return pool
