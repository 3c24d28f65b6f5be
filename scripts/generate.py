"""The original suite's `python scripts/generate.py ...`: `mlproject generate` in the original profile.

Its flags and defaults are the original's (docs/migration.md); a later `--profile default` wins.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a checkout that is not installed

from mlproject.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["generate", "--profile", "original", *sys.argv[1:]]))
