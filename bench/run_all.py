"""Run every benchmark in bench/ (files named bench_*.py), one after another.

Each prints its own figures as ratios against a baseline measured in the same run.
Usage: python bench/run_all.py [name-filter]
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    wanted = sys.argv[1] if len(sys.argv) > 1 else ""
    failures = 0
    for script in sorted(HERE.glob("bench_*.py")):
        if wanted not in script.stem:
            continue
        print(f"\n=== {script.stem} ===", flush=True)
        failures += subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
