"""Runs every benchmark in turn (`make bench`); each prints its own figures and ratios."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ["bench.login_storm", "bench.org_members", "bench.health_live", "bench.bridge",
              "bench.audit_export", "bench.backup"]


def main() -> int:
    failed = 0
    for module in BENCHMARKS:
        print(f"\n=== {module} ===", flush=True)
        failed += subprocess.run([sys.executable, "-m", module], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
