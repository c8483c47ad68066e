"""Dialer pacing: concurrency, rate and agents, slowing near the abandon limit."""

from ari_app.pacing import TokenBucket, abandon_rate, calls_to_start, effective_ratio


def test_abandon_rate():
    assert abandon_rate(0, 0) == 0
    assert abandon_rate(200, 6) == 3.0


def test_ratio_slows_towards_the_limit():
    assert effective_ratio(2.0, 0.0, 3.0) == 2.0
    assert effective_ratio(2.0, 1.5, 3.0) == 2.0          # half the limit: full speed
    assert 1.0 < effective_ratio(2.0, 2.0, 3.0) < 2.0      # slowing
    assert abs(effective_ratio(2.0, 2.4, 3.0) - 1.0) < 1e-9  # 80 %: one call per free agent
    assert 0.5 < effective_ratio(2.0, 2.7, 3.0) < 1.0
    assert effective_ratio(2.0, 3.0, 3.0) == 0.5
    assert effective_ratio(2.0, 9.0, 3.0) == 0.5
    assert effective_ratio(1.0, 0.0, 0.0) == 0.5
    # monotone: a higher abandon rate never speeds up
    prev = 10.0
    for i in range(0, 400):
        r = effective_ratio(1.7, i / 100, 3.0)
        assert r <= prev + 1e-12
        prev = r


def test_calls_to_start_smallest_limit_wins():
    kw = dict(max_concurrent=10, in_flight=0, tokens=5, free_agents=4, unbridged=0, ratio=1.0)
    assert calls_to_start(**kw) == 4
    assert calls_to_start(**{**kw, "ratio": 1.5}) == 5  # tokens
    assert calls_to_start(**{**kw, "in_flight": 8}) == 2  # concurrency
    assert calls_to_start(**{**kw, "unbridged": 3}) == 1
    assert calls_to_start(**{**kw, "free_agents": 0}) == 0  # no agent: no call
    assert calls_to_start(**{**kw, "ratio": 0.5}) == 2
    assert calls_to_start(**{**kw, "free_agents": 1, "ratio": 0.5}) == 1  # never stalls with a free agent
    assert calls_to_start(**{**kw, "free_agents": 1, "ratio": 0.5, "unbridged": 1}) == 0
    assert calls_to_start(**{**kw, "tokens": 0}) == 0


def test_token_bucket():
    t = [0.0]
    b = TokenBucket(10.0, clock=lambda: t[0])
    assert b.available() == 1  # no burst at start
    b.take(1)
    assert b.available() == 0
    t[0] = 0.1
    assert b.available() == 1
    b.take(1)
    t[0] = 100
    assert b.available() == 2  # burst capped at 200 ms worth
    b.set_rate(1.0)
    assert b.available() == 1


def test_token_bucket_rate_over_time():
    t = [0.0]
    b = TokenBucket(50.0, clock=lambda: t[0])
    started = 0
    for step in range(1000):  # 10 s in 10 ms steps
        t[0] = step * 0.01
        n = b.available()
        b.take(n)
        started += n
    assert 495 <= started <= 502


def test_pacer_per_campaign_bucket_and_ratio():
    from ari_app.pacing import Pacer

    t = [0.0]
    p = Pacer(clock=lambda: t[0])
    p.update("a", calls_per_second=10, dial_ratio=2.0, rate_pct=0.0, limit_pct=3.0)
    p.update("b", calls_per_second=10, dial_ratio=2.0, rate_pct=3.0, limit_pct=3.0)  # at the limit
    # a: one token to start with, ratio 2 for 4 free agents
    assert p.how_many("a", max_concurrent=10, in_flight=0, free_agents=4, unbridged=0) == 1
    p.take("a")
    assert p.how_many("a", max_concurrent=10, in_flight=1, free_agents=4, unbridged=1) == 0  # no token left
    t[0] = 1.0  # 10 tokens/s, burst 2
    assert p.how_many("a", max_concurrent=10, in_flight=1, free_agents=4, unbridged=1) == 2
    assert p.ratios["b"] == 0.5
    t[0] = 2.0
    assert p.how_many("b", max_concurrent=10, in_flight=0, free_agents=4, unbridged=0) == 2  # 4 x 0.5
    p.update("a", calls_per_second=1, dial_ratio=2.0, rate_pct=0.0, limit_pct=3.0)
    assert p.buckets["a"].rate == 1 and p.buckets["a"].burst == 1.0
