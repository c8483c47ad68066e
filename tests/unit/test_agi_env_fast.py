"""agi.protocol.parse_env_fast (the one-pass environment block) never accepts
what EnvParser refuses and, when it accepts, gives EnvParser's result."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agi import protocol as p

KEYS = st.one_of(st.sampled_from(["agi_network", "agi_request", "agi_uniqueid", "agi_channel", "agi_arg_1",
                                  "agi_arg_2", "agi_callerid", "agi_network_script"]),
                 st.text("abcdefghijklmnopqrstuvwxyz0123456789_:Aé ", min_size=0, max_size=12).map(lambda s: "agi_" + s),
                 st.text(min_size=0, max_size=8))
VALUES = st.one_of(st.text(max_size=20), st.binary(max_size=12).map(lambda b: b.decode("latin-1")))


def slow(block: bytes) -> dict | None:
    parser = p.EnvParser()
    try:
        for line in (block + b"\n").splitlines(keepends=True):
            if parser.feed(line):
                return parser.env
    except p.ProtocolError:
        return None
    return None


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(KEYS, VALUES, st.sampled_from([": ", ":", ":  "])), min_size=0, max_size=8))
def test_fast_agrees_with_the_line_parser(pairs):
    block = b"".join(k.encode("utf-8", "surrogatepass") + sep.encode() + v.encode("utf-8", "surrogatepass") + b"\n"
                     for k, v, sep in pairs if "\n" not in k + v)
    fast = p.parse_env_fast(block)
    if fast is not None:
        assert fast == slow(block)


def test_fast_takes_a_real_block_and_leaves_odd_ones_to_the_parser():
    block = (b"agi_network: yes\nagi_network_script: check\nagi_request: agi://127.0.0.1/check\n"
             b"agi_uniqueid: 1.2\nagi_callerid: \xff\nagi_arg_1: 13900000001\nagi_arg_2: c1\n")
    env = p.parse_env_fast(block)
    assert env == slow(block) and env["agi_callerid"] == "\ufffd" and env["agi_arg_1"] == "13900000001"
    for odd in (b"agi_arg_1: a\x01b\n", b"agi_uniqueid: \xff\n", b"agi_x: 1\nagi_x: 2\n", b"agi_x: 1\r\n",
                b"AGI_X: 1\n", b"agi_: 1\n", b"agi_x 1\n",
                # one bad line among clean ones (the one-regex path counts its matches)
                b"agi_a: 1\nxagi_b: 2\nagi_c: 3\n", b"agi_a: 1\nbogus\nagi_c: 3\n", b"agi_a: 1\nagi_b:2\n"):
        assert p.parse_env_fast(odd) is None, odd
