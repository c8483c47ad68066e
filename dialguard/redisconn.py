"""Redis clients for every component, from the settings: one URL, or the
primary that Sentinel names (DIALGUARD_REDIS_SENTINELS, DIALGUARD_REDIS_MASTER).

redis-py's Sentinel support (redis.sentinel, redis.asyncio.sentinel) asks the
Sentinels for the primary on each new connection and drops a connection that
answers READONLY (a demoted primary), so the cold paths follow a failover by
themselves; the hot path's pipelined client (dialguard.redisclient) does the
same on its own.
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from dialguard.config import Settings


def credentials(settings: Settings) -> dict:
    """The data nodes' username, password and database, from DIALGUARD_REDIS_URL."""
    u = urlparse(settings.redis_url)
    db = 0
    if u.scheme != "unix" and u.path and u.path.strip("/"):
        db = int(u.path.strip("/"))
    for part in (u.query or "").split("&"):
        if part.startswith("db="):
            db = int(part[3:])
    return {"username": unquote(u.username) if u.username else None,
            "password": unquote(u.password) if u.password else None, "db": db,
            "ssl": u.scheme == "rediss"}


def _sentinel_kwargs(settings: Settings, timeout: float) -> dict:
    kw = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if settings.redis_sentinel_password:
        kw["password"] = settings.redis_sentinel_password
        if settings.redis_sentinel_username:
            kw["username"] = settings.redis_sentinel_username
    return kw


def _data_kwargs(settings: Settings) -> dict:
    c = credentials(settings)
    kw = {"username": c["username"], "password": c["password"], "db": c["db"]}
    if c["ssl"]:
        kw["ssl"] = True
    return kw


def sync_redis(settings: Settings, **kw):
    """A redis.Redis on the primary (kw: decode_responses, socket_timeout, ...)."""
    import redis

    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **kw)
    from redis.sentinel import Sentinel

    t = kw.get("socket_connect_timeout") or kw.get("socket_timeout") or 1.0
    s = Sentinel(settings.sentinel_addrs(), sentinel_kwargs=_sentinel_kwargs(settings, t))
    return s.master_for(settings.redis_master, **_data_kwargs(settings), **kw)


def async_redis(settings: Settings, *, max_connections: int, timeout: float):
    """A redis.asyncio.Redis on the primary with a bounded pool; every socket
    operation bounded by `timeout` seconds, none of them able to lose a cancel of the
    task awaiting it (dialguard.redis_cancel)."""
    import redis.asyncio as aioredis

    from dialguard.redis_cancel import cancel_safe

    if not settings.redis_sentinels:
        # A bounded pool: a burst of calls queues for a connection (within the
        # decision deadline) instead of opening hundreds of sockets at once.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=max_connections, timeout=timeout,
            socket_timeout=timeout, socket_connect_timeout=timeout)
        return aioredis.Redis(connection_pool=cancel_safe(pool))
    from redis.asyncio.sentinel import Sentinel

    s = Sentinel(settings.sentinel_addrs(), sentinel_kwargs=_sentinel_kwargs(settings, timeout))
    for sentinel in s.sentinels:  # asked for the primary within a command's (cancellable) connect
        cancel_safe(sentinel.connection_pool)
    r = s.master_for(settings.redis_master, max_connections=max_connections, socket_timeout=timeout,
                     socket_connect_timeout=timeout, **_data_kwargs(settings))
    cancel_safe(r.connection_pool)
    return r


def fast_client(settings: Settings, *, timeout: float, connect_timeout: float):
    """The hot path's pipelined client (dialguard.redisclient.RedisClient)."""
    from dialguard.redisclient import RedisClient

    if not settings.redis_sentinels:
        return RedisClient(settings.redis_url, timeout=timeout, connect_timeout=connect_timeout)
    return RedisClient(settings.redis_url, timeout=timeout, connect_timeout=connect_timeout,
                       sentinels=settings.sentinel_addrs(), master=settings.redis_master,
                       sentinel_username=settings.redis_sentinel_username or None,
                       sentinel_password=settings.redis_sentinel_password or None)
