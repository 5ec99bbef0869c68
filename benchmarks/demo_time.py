"""Measure ``wskan demo`` end to end: a fresh cache (zoos built, not reused), wall time, and
its table, written for the docs.

    python benchmarks/demo_time.py [--dataset mnist5k] [--md docs/demo_result.inc]

Runs ``wskan demo --cache TMP --quiet`` in a subprocess with the environment as given (the
demo's own thread default), measures its wall time and writes the demo's ``results.md``
followed by the command, the machine, the load average at the start and the wall time.
Never asserts on time.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"])
    p.add_argument("--md", default=os.path.join(os.path.dirname(__file__), "..", "docs", "demo_result.inc"))
    a = p.parse_args(argv)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cache:
        cmd = [sys.executable, "-m", "wskan_ext.cli", "demo", "--cache", cache, "--quiet", "--dataset", a.dataset]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
            return proc.returncode
        with open(os.path.join(cache, a.dataset, "results.md")) as f:
            table = f.read().rstrip()
    machine = f"{platform.machine()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"
    text = (f"{table}\n\nMeasured by ``python benchmarks/demo_time.py --dataset {a.dataset}``: ``wskan demo "
            f"--dataset {a.dataset}`` from an empty cache took **{wall / 60:.1f} min** wall on {machine} "
            f"(1-min load average at the start {load:.2f}).\n")
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(a.md)), exist_ok=True)
    with open(a.md, "w") as f:
        f.write(text)
    print(f"wrote {a.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
