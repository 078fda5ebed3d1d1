"""Results of a bench run: the summary of its rows, the README table and the SVG plot.

`python -m bench.report [results.json]` rebuilds the plot next to the results and prints the
table, without running anything.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_START = "<!-- bench:table -->"
README_END = "<!-- /bench:table -->"

# Plot colours by target.
COLOURS = {
    "service": "#1f77b4",
    "baseline": "#ff7f0e",
    "baseline_bcrypt": "#d62728",
    "baseline_sync5": "#8c564b",
    "ceilings": "#7f7f7f",
    "postgres": "#2ca02c",
}


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(rows: list[dict]) -> list[dict]:
    """One line per (scenario, target), in the order rows first ran: medians over rounds,
    with the throughput's range."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["target"]), []).append(row)
    summary = []
    for (scenario, target), group in groups.items():
        throughputs = [row["throughput_rps"] for row in group]
        cpu_keys = sorted({key for row in group for key in row["cpu_ms_per_request"]})
        summary.append(
            {
                "scenario": scenario,
                "target": target,
                "loop": group[0]["loop"],
                "rounds": len(group),
                "throughput_rps": _median(throughputs),
                "throughput_rps_min": round(min(throughputs), 1),
                "throughput_rps_max": round(max(throughputs), 1),
                "rate_target_rps": _median([row.get("rate_target_rps") for row in group]),
                "p50_ms": _median([row["latency_ms"].get("p50") for row in group]),
                "p99_ms": _median([row["latency_ms"].get("p99") for row in group]),
                "cpu_ms_per_request": {
                    key: _median([row["cpu_ms_per_request"].get(key) for row in group]) for key in cpu_keys
                },
                "steal_pct": _median([row["steal_pct"] for row in group]),
                "other_busy_pct": _median([row["other_busy_pct"] for row in group]),
            }
        )
    return summary


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def table(summary: list[dict]) -> str:
    """The README's table (Markdown)."""
    lines = [
        "| scenario | target | req/s (median; min-max) | p50 ms | p99 ms | server CPU ms/req | worker CPU ms/req"
        " | PostgreSQL CPU ms/req | load generator CPU ms/req | steal % | others' CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for line in summary:
        cpu = line["cpu_ms_per_request"]
        rate = f" (open loop at {_number(line['rate_target_rps'])}/s)" if line["loop"] == "open" else ""
        lines.append(
            f"| {line['scenario']} | {line['target']} | {_number(line['throughput_rps'])}{rate}; "
            f"{_number(line['throughput_rps_min'])}-{_number(line['throughput_rps_max'])} "
            f"| {_number(line['p50_ms'], 2)} | {_number(line['p99_ms'], 2)} "
            f"| {_number(cpu.get('server'), 2)} | {_number(cpu.get('worker'), 2)} | {_number(cpu.get('postgres'), 2)} "
            f"| {_number(cpu.get('loadgen'), 3)} | {_number(line['steal_pct'])} | {_number(line['other_busy_pct'])} |"
        )
    return "\n".join(lines)


def _log_axis(low: float, high: float) -> tuple[float, float, list[float]]:
    low_exp, high_exp = math.floor(math.log10(low)), math.ceil(math.log10(high))
    return low_exp, high_exp, [10.0**e for e in range(low_exp, high_exp + 1)]


def _panel(summary: list[dict], key: str, title: str, unit: str, x0: int, width: int, top: int, bar: int) -> list[str]:
    values = [line[key] for line in summary if line[key]]
    low_exp, high_exp, ticks = _log_axis(min(values), max(values))
    span = high_exp - low_exp or 1

    def x(value: float) -> float:
        return x0 + width * (math.log10(value) - low_exp) / span

    out = [f'<text x="{x0}" y="{top - 26}" font-weight="bold">{escape(title)}</text>']
    bottom = top + bar * len(summary)
    for tick in ticks:
        out.append(f'<line x1="{x(tick):.1f}" y1="{top - 4}" x2="{x(tick):.1f}" y2="{bottom}" stroke="#ddd"/>')
        out.append(f'<text x="{x(tick):.1f}" y="{top - 8}" text-anchor="middle" font-size="10">{tick:g}</text>')
    for i, line in enumerate(summary):
        value = line[key]
        if not value:
            continue
        y = top + i * bar
        colour = COLOURS.get(line["target"], "#333")
        out.append(
            f'<rect x="{x0}" y="{y + 3}" width="{max(1.0, x(value) - x0):.1f}" height="{bar - 6}" fill="{colour}"/>'
        )
        out.append(f'<text x="{x(value) + 4:.1f}" y="{y + bar - 7}" font-size="10">{_number(value)} {unit}</text>')
    return out


def svg(summary: list[dict], *, subtitle: str) -> str:
    """Throughput and p99 per row of the summary, on log axes, as a dependency-free SVG."""
    bar, label_width, panel, gap, top = 20, 300, 330, 90, 70
    width = label_width + 2 * panel + gap + 80
    height = top + bar * len(summary) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="18" font-size="14" font-weight="bold">make bench: {escape(subtitle)}</text>',
    ]
    for i, line in enumerate(summary):
        y = top + i * bar + bar - 7
        name = f"{line['scenario']} · {line['target']}"
        out.append(f'<text x="{label_width - 8}" y="{y}" text-anchor="end">{escape(name)}</text>')
    out += _panel(
        summary, "throughput_rps", "requests/s (median of rounds, log scale)", "/s", label_width, panel, top, bar
    )
    out += _panel(summary, "p99_ms", "p99 latency, ms (log scale)", "ms", label_width + panel + gap, panel, top, bar)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def subtitle(results: dict) -> str:
    conditions = results["conditions"]
    return (
        f"{results['git']['commit'][:10]}, {results['machine']['cpus']} CPUs, "
        f"{results['settings']['rounds']} rounds x {results['settings']['duration_s']} s, "
        f"steal {conditions['steal_pct_mean']}%, others' CPU {conditions['other_busy_pct_mean']}%"
    )


def readme_update(readme: Path, markdown: str) -> bool:
    """Replace the table between the README's markers; False when the markers are missing."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{markdown}\n{README_END}{tail}")
    return True


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else ROOT / "docs" / "bench" / "results.json"
    results = json.loads(path.read_text())
    path.with_suffix(".svg").write_text(svg(results["summary"], subtitle=subtitle(results)))
    print(table(results["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
