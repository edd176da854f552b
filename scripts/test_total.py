"""The one closing line of scripts/test.sh for its pytest runs: `total: N passed, M failed, K skipped`.

    python scripts/test_total.py REPORTS_DIR NAME=EXIT_CODE...     (REPORTS_DIR/NAME.xml: that run's junit report)

A run that did not finish (killed, crashed, interrupted: an exit code other than pytest's 0 and 1, or no report)
counts as one failure and is named on stderr: a partial count is never printed as the total.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def total(reports: Path, runs: dict[str, int]) -> tuple[str, list[str]]:
    passed = failed = skipped = 0
    unfinished = []
    for name, rc in runs.items():
        report = reports / f"{name}.xml"
        if rc not in (0, 1) or not report.is_file():  # pytest: 0 all passed, 1 some failed; anything else stopped it
            unfinished.append(f"the {name} suite did not finish (exit {rc}): its tests are not in the total")
            failed += 1
            continue
        for suite in ET.parse(report).getroot().iter("testsuite"):
            n, fl, er, sk = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
            passed += n - fl - er - sk
            failed += fl + er
            skipped += sk
    return f"total: {passed} passed, {failed} failed, {skipped} skipped", unfinished


def main(argv: list[str]) -> int:
    line, unfinished = total(Path(argv[0]), {name: int(rc) for name, rc in (arg.split("=", 1) for arg in argv[1:])})
    for problem in unfinished:
        print(f"error: {problem}", file=sys.stderr)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
