"""outcome.lua's pruning of the lapsed pick penalties ({g}:cidpen) reaches the replicas: a
script's effects are what Redis 7 replicates (the HDELs, not the HSCAN that chose them), so a
replica promoted after a failover holds the same hash as the primary did."""

from __future__ import annotations

import uuid

from tests.ha import ha
from tests.integration.test_cidpen_prune import T0, Outcomes


def test_the_pruning_reaches_the_replicas(ha_settings):
    host, port = ha.primary(ha_settings)
    p = ha.node(host, port)
    info = p.info("replication")
    replicas = [ha.node(v["ip"], int(v["port"])) for k, v in info.items() if k.startswith("slave")]
    assert len(replicas) == 2, info
    pfx = f"dghaprune:{uuid.uuid4().hex[:8]}"
    o = Outcomes(p, pfx)
    now = T0
    try:
        p.hset(o.pen, mapping={**{f"l{i}": f"0.100|{now - i}" for i in range(300)},
                               **{f"v{i}": f"0.200|{now + 1 + i}" for i in range(50)}})
        n = o.grow(now)
        assert p.wait(2, 5000) == 2
        want = p.hgetall(o.pen)
        assert len(want) >= 50 + n
        for r in replicas:
            assert r.hgetall(o.pen) == want
    finally:
        for k in p.scan_iter(match=f"{pfx}:*", count=1000):
            p.delete(k)
