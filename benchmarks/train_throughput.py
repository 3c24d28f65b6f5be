"""Training throughput: the suite's training figures (`python -m benchmarks --only train --only trainer`).

Our GPT-2 against Hugging Face's GPT-2 (and our GPT-3, and CPU MFU) on a bare training step,
then the whole trainer with MLflow tracking on and off (with the time spent inside the
logging callbacks) and its data-loading share. The measurements live in the suite
(`benchmarks/training.py`, `benchmarks/trainer_loop.py`); options are the suite's.

    python benchmarks/train_throughput.py [--quick] [--json] [--threads N]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable
    from benchmarks.__main__ import main

    sys.exit(main(["--only", "train", "--only", "trainer", *sys.argv[1:]]))
