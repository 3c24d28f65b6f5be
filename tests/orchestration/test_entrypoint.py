"""The step image's entry point (docker/entrypoint.py): output passes through, result line last."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ENTRYPOINT = Path(__file__).resolve().parents[2] / "docker" / "entrypoint.py"
RESULT = 'MLPROJECT_RESULT {"step": "compare", "run_id": "abc", "status": "FINISHED"}'


def run_step(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ENTRYPOINT), sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60)


def test_result_line_is_printed_again_as_the_last_line():
    done = run_step(f"import sys; print({RESULT!r}); print('=== Run succeeded ===', file=sys.stderr)")
    lines = done.stdout.splitlines()
    assert lines == [RESULT, "=== Run succeeded ===", RESULT]


def test_exit_code_of_the_command_is_kept():
    done = run_step(f"import sys; print({RESULT!r}); sys.exit(3)")
    assert done.returncode == 3
    assert done.stdout.splitlines()[-1] == RESULT


def test_output_without_a_result_passes_through_unchanged():
    done = run_step("print('MLPROJECT_RESULT not-json'); print('done')")
    assert done.stdout.splitlines() == ["MLPROJECT_RESULT not-json", "done"]


def test_unknown_command_is_exit_code_127():
    done = subprocess.run([sys.executable, str(ENTRYPOINT), "no-such-command-xyz"], capture_output=True, text=True)
    assert done.returncode == 127 and "command not found: no-such-command-xyz" in done.stderr


def test_sigterm_reaches_the_command():
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: (print('got SIGTERM', flush=True), sys.exit(143)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, str(ENTRYPOINT), sys.executable, "-c", code],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert "got SIGTERM" in out
    assert proc.returncode == 143
