"""RTP audio files for SIPp's play_pcap_audio, written at test time (no binary in the repo).

A pcap (libpcap, Ethernet) of RTP packets, PCMU (payload type 0, the stack's only
codec), 20 ms each: SIPp rewrites addresses and ports and replays them at their
recorded times. `tone` is a loud 440 Hz sine (voice to AMD's silence detector),
`silence` is mu-law silence (0xFF): packets keep flowing, as from a real phone.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz


def _ulaw(sample: int) -> int:
    """G.711 mu-law of a 16-bit sample (ITU-T G.711)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    s = min(abs(sample), clip) + bias
    exp = 7
    mask = 0x4000
    while exp > 0 and not s & mask:
        exp -= 1
        mask >>= 1
    mant = (s >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF


def tone(seconds: float, hz: float = 440.0, amplitude: int = 12000) -> list[bytes]:
    n = int(seconds * RATE)
    data = bytes(_ulaw(int(amplitude * math.sin(2 * math.pi * hz * i / RATE))) for i in range(n))
    return [data[i:i + FRAME] for i in range(0, n - n % FRAME, FRAME)]


def silence(seconds: float) -> list[bytes]:
    return [b"\xff" * FRAME] * int(seconds * RATE / FRAME)


def write_pcap(path: Path, frames: list[bytes]) -> Path:
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # Ethernet
    for i, payload in enumerate(frames):
        rtp = struct.pack("!BBHII", 0x80, 0, i & 0xFFFF, (i * FRAME) & 0xFFFFFFFF, 0x5EED) + payload
        udp = struct.pack("!HHHH", 40000, 40000, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        frame = b"\x00" * 6 + b"\x00" * 6 + b"\x08\x00" + ip + udp
        t = i * FRAME / RATE
        out += struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))
    return path


def _checksum(header: bytes) -> int:
    s = sum(struct.unpack("!10H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
