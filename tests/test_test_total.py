"""scripts/test_total.py: the test script's closing line never reports a partial run as the total."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def junit(path, tests, failures=0, skipped=0):
    path.write_text(f'<testsuites><testsuite name="pytest" tests="{tests}" failures="{failures}" errors="0" skipped="{skipped}"/></testsuites>')


def run(reports, *runs):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "test_total.py"), str(reports), *runs], capture_output=True, text=True)
    return proc.stdout.strip(), proc.stderr.strip()


def test_finished_runs_are_added_up(tmp_path):
    junit(tmp_path / "core.xml", 10, failures=1, skipped=2)
    junit(tmp_path / "verl.xml", 12)
    assert run(tmp_path, "core=1", "verl=0") == ("total: 19 passed, 1 failed, 2 skipped", "")


def test_a_killed_run_is_named_and_counted_failed_even_with_a_report(tmp_path):
    junit(tmp_path / "core.xml", 3)  # written before the kill: not the run's total
    junit(tmp_path / "verl.xml", 12)
    line, said = run(tmp_path, "core=137", "verl=0")
    assert line == "total: 12 passed, 1 failed, 0 skipped"
    assert "the core suite did not finish (exit 137)" in said
    line, said = run(tmp_path, "core=0", "missing=0")  # exited 0 but left no report
    assert line == "total: 3 passed, 1 failed, 0 skipped" and "the missing suite did not finish" in said
