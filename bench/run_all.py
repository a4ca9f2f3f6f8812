"""Runs every benchmark in turn (`make bench`); each prints its own figures beside its
reference in the same run, with medians over rounds, then ratios. Ends with a list of
what failed to run."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ["bench.login_storm", "bench.org_members", "bench.health_live", "bench.bridge",
              "bench.key_flood", "bench.audit_export", "bench.audit_plans", "bench.backup",
              "bench.workers", "bench.login_mfa", "bench.audit_search", "bench.scale"]


def main() -> int:
    failed = []
    for module in BENCHMARKS:
        print(f"\n=== {module} ===", flush=True)
        if subprocess.run([sys.executable, "-m", module], check=False).returncode != 0:
            failed.append(module)
    print(f"\n=== {len(BENCHMARKS) - len(failed)} of {len(BENCHMARKS)} ran"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
