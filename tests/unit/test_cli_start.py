"""A `dialguard` command's start does no password hashing (dialguard/users.py).

users.py once made its dummy argon2 hash (the one an unknown login is verified
against) at import: about 0.5 s of CPU and 64 MiB in every `dialguard` process,
half of a CLI command's start. It is made on first use now, and by the console
at its start (web/app.py)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import argon2
made = []
orig = argon2.PasswordHasher.hash
argon2.PasswordHasher.hash = lambda self, *a, **kw: made.append(1) or orig(self, *a, **kw)
import dialguard.cli.main, dialguard.users
print(len(made))
"""


def test_importing_the_cli_hashes_no_password() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_an_unknown_user_is_still_verified_against_a_hash() -> None:
    from dialguard import users

    assert users._dummy_hash().startswith("$argon2")
    assert users._dummy_hash() is users._dummy_hash()  # made once
    assert users.verify_password(None, "any password at all") is False
    assert users.verify_password(users.hash_password("a long password"), "a long password") is True
