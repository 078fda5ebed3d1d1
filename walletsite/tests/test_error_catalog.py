"""docs/errors.md and walletsite.errors.CATALOG list the same codes, statuses and titles,
and every code the code base raises is in the catalog."""

from __future__ import annotations

import re
from pathlib import Path

from walletsite.errors import CATALOG

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `([a-z_]+)` \| (\d{3}) \| ([^|]+?) \| .+ \|$")


def _documented() -> dict[str, tuple[int, str]]:
    rows = {}
    for line in (ROOT / "docs" / "errors.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            code, status, title = match.groups()
            assert code not in rows, f"{code} is documented twice"
            rows[code] = (int(status), title.strip())
    return rows


def test_the_documented_catalog_is_the_catalog():
    assert _documented() == CATALOG


def test_every_code_used_in_the_source_is_in_the_catalog():
    # Codes appear in the source as code="..." or problem("...") / _django_problem("...").
    pattern = re.compile(r"""(?:code=|problem\(|problem_response\(|_django_problem\()["']([a-z_]+)["']""")
    used = set()
    for path in ROOT.glob("*/**/*.py"):
        if ".venv" in path.parts or "tests" in path.parts:
            continue
        used |= set(pattern.findall(path.read_text()))
    assert used, "the pattern found no codes at all"
    assert used <= set(CATALOG), sorted(used - set(CATALOG))
