"""Memory of the ZIP data set in a guard process, the two ways side by side.

    .venv/bin/python bench/zip_memory.py

Each way runs in a fresh interpreter that imports the engine first (what the
FastAGI server and the dialer hold anyway), then loads the ZIP data and looks
up a ZIP code; it prints the resident set size (VmRSS) before and after:
- "zipcodes in process": the pinned package's data set decompressed in the
  process (zipcodes.matching), as dialguard/location.py did before;
- "compact table": location.warm_up(), the table of state and zone per ZIP
  read from a child process (dialguard/location.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import json, time
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
import dialguard.engine  # noqa: F401 - what a guard process holds anyway
before = rss()
t = time.perf_counter()
if MODE == 'old':
    import zipcodes
    place = zipcodes.matching('33101')[0]['state']
else:
    from dialguard import location
    location.warm_up()
    place = location.zip_place('33101')[0]
print(json.dumps({'before': before, 'after': rss(), 'seconds': time.perf_counter() - t, 'place': place}))
"""


def run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", f"MODE = {mode!r}\n" + CHILD], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    rows = [("zipcodes in process", run("old")), ("compact table", run("new"))]
    print(f"{'ZIP data':<22}{'RSS before MB':>15}{'RSS after MB':>14}{'added MB':>10}{'load s':>8}")
    for label, r in rows:
        print(f"{label:<22}{r['before']:>15.1f}{r['after']:>14.1f}{r['after'] - r['before']:>10.1f}"
              f"{r['seconds']:>8.2f}")
    old, new = (r["after"] - r["before"] for _, r in rows)
    print(f"compact / in process: {new / old:.3f} of the memory added")


if __name__ == "__main__":
    main()
