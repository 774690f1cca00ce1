"""Print the README's client x feature table from a run of tests/e2e/test_clients.py.

    .venv/bin/python scripts/compat_table.py      # runs the suite (about a minute)

A passed test is a check mark, a skip whose reason starts with ``n/a`` is
"n/a", a skip "covered by ..." is a check mark (the feature is tested
elsewhere), a client that is not installed a dash, and anything else
(failed, xfailed, skipped for another reason) is a cross with the reason as a
footnote.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

SUITE = "tests/e2e/test_clients.py"
FEATURES = ("chat", "stream", "tools", "structured", "embeddings", "logprobs", "n", "errors",
            "cancel")
_ID = re.compile(r"test_(\w+)\[(.+)\]")


def results(xml: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(client, feature) -> (mark, note) from a junit XML report."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        m = _ID.fullmatch(case.get("name", ""))
        if not m or m[1] not in FEATURES:
            continue
        mark, note = "✓", ""
        for child in case:
            text = (child.get("message") or "").strip()
            if child.tag == "skipped" and text.startswith("could not import"):
                mark, note = "–", "not installed"
            elif child.tag == "skipped" and text.startswith("n/a"):
                mark, note = "n/a", text.removeprefix("n/a: ")
            elif child.tag == "skipped" and text.startswith("covered by"):
                mark, note = "✓", text
            elif child.tag in ("skipped", "failure", "error"):
                mark, note = "✗", text.splitlines()[0] if text else child.tag
        out[(m[2], m[1])] = (mark, note)
    return out


def table(res: dict[tuple[str, str], tuple[str, str]]) -> str:
    clients = list(dict.fromkeys(c for c, _ in res))
    lines = ["| client | " + " | ".join(FEATURES) + " |",
             "|---" * (len(FEATURES) + 1) + "|"]
    notes: list[str] = []
    for c in clients:
        cells = []
        for f in FEATURES:
            mark, note = res.get((c, f), ("?", "not run"))
            if mark == "✗":
                notes.append(f"{c} {f}: {note}")
                mark += f"[^{len(notes)}]"
            cells.append(mark)
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += [""] + [f"[^{i}]: {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "report.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        SUITE, f"--junitxml={xml}"], check=False, stdout=sys.stderr)
        print(table(results(xml)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
