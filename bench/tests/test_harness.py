"""The harness's own arithmetic and bookkeeping; `BENCH_SMOKE=1 make bench` (CI) runs the
whole of it against real servers."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest

from bench import procs, report
from bench.load import percentiles_from_histogram
from bench.run import BY_NAME, SCENARIOS, TARGETS, Knobs


def bucket(latency_us: float, per_e: int = 50) -> int:
    # As bench/lua/common.lua files a latency.
    return math.floor(math.log(latency_us) * per_e)


def test_percentiles_come_from_the_bucket_that_holds_the_rank():
    # given 98 answers at 1 ms, one at 10 ms and one at 100 ms
    hist = {bucket(1000): 98, bucket(10_000): 1, bucket(100_000): 1}

    # when
    got = percentiles_from_histogram(hist, 50)

    # then each is within the 2% width of its bucket
    assert got["p50"] == pytest.approx(1.0, rel=0.02)
    assert got["p90"] == pytest.approx(1.0, rel=0.02)
    assert got["p99"] == pytest.approx(10.0, rel=0.02)
    assert got["p99.9"] == pytest.approx(100.0, rel=0.02)
    assert got["max"] == pytest.approx(100.0, rel=0.03)
    assert percentiles_from_histogram({}, 50) == {}


def test_tree_cpu_counts_children_that_already_exited():
    # given a child that burns CPU in a grandchild and waits for it
    burn = "import time; t = time.process_time() + 0.3\nwhile time.process_time() < t: pass"
    script = f"import subprocess, sys, time; subprocess.run([sys.executable, '-c', {burn!r}]); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while len(procs.tree(child.pid)) == 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(procs.tree(child.pid)) == 2, "the grandchild never started"
        while len(procs.tree(child.pid)) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        # when the grandchild has exited and been reaped
        used = procs.tree_cpu(child.pid)
    finally:
        child.kill()
        child.wait()

    # then its CPU is still counted, through the parent's cutime and cstime
    assert used >= 0.3


def test_every_scenario_names_known_targets_and_its_closed_loop_twin():
    for scenario in SCENARIOS:
        assert set(scenario.targets) <= set(TARGETS), scenario.name
        if scenario.open_of:
            twin = BY_NAME[scenario.open_of]
            assert twin.open_of is None and set(scenario.targets) <= set(twin.targets)


def test_knobs_smoke_defaults_and_refusals(tmp_path):
    knobs = Knobs.from_env({"BENCH_SMOKE": "1", "BENCH_DATA_DIR": str(tmp_path)})
    assert (knobs.rounds, knobs.sync5, knobs.readme, knobs.reuse) == (1, False, False, False)
    assert knobs.output == tmp_path / "results.json"
    assert (knobs.web_concurrency, knobs.web_threads, knobs.pgbench_clients) == (2, 32, 16)
    assert Knobs.from_env({"BENCH_PGBENCH_CLIENTS": "8"}).pgbench_clients == 8

    assert Knobs.from_env({"BENCH_SMOKE": "1", "BENCH_REUSE": "1"}).reuse
    full = Knobs.from_env({"BENCH_DATA_DIR": str(tmp_path)})
    assert (full.rounds, full.sync5, full.readme, full.history_entries) == (3, True, True, 1_000_000)

    with pytest.raises(SystemExit, match="add p2p"):
        Knobs.from_env({"BENCH_SCENARIOS": "p2p_open"})
    with pytest.raises(SystemExit, match="unknown BENCH_SCENARIOS"):
        Knobs.from_env({"BENCH_SCENARIOS": "p2p,nope"})
    with pytest.raises(SystemExit, match="BENCH_DURATION"):
        Knobs.from_env({"BENCH_DURATION": "0"})


def rows(*values: tuple[str, str, float, float]) -> list[dict]:
    return [
        {
            "scenario": scenario,
            "target": target,
            "loop": "closed",
            "throughput_rps": throughput,
            "latency_ms": {"p50": p99 / 2, "p99": p99},
            "cpu_ms_per_request": {"server": 1.0, "postgres": 0.5, "loadgen": 0.01},
            "steal_pct": 0.5,
            "other_busy_pct": 3.0,
        }
        for scenario, target, throughput, p99 in values
    ]


def test_summary_takes_medians_over_rounds_and_the_range():
    summary = report.summarize(
        rows(("p2p", "service", 100, 10), ("p2p", "service", 300, 30), ("p2p", "service", 200, 20))
        + rows(("p2p", "baseline", 50, 5))
    )

    assert [(s["scenario"], s["target"]) for s in summary] == [("p2p", "service"), ("p2p", "baseline")]
    service = summary[0]
    assert (service["rounds"], service["throughput_rps"], service["p99_ms"]) == (3, 200, 20)
    assert (service["throughput_rps_min"], service["throughput_rps_max"]) == (100, 300)


def test_table_and_plot_show_every_line(tmp_path):
    summary = report.summarize(rows(("p2p", "service", 1234.5, 12.5), ("ceiling_bare", "ceilings", 6000, 2)))

    markdown = report.table(summary)
    picture = report.svg(summary, subtitle="test")

    assert markdown.count("\n") == 3 and "| p2p | service | 1,234; 1,234-1,234 |" in markdown
    assert picture.startswith("<svg") and picture.count("<rect") == 1 + 2 * 2
    assert "ceiling_bare · ceilings" in picture


def test_readme_table_is_replaced_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\noutro\n")

    assert report.readme_update(readme, "| new |")
    assert readme.read_text() == f"intro\n{report.README_START}\n| new |\n{report.README_END}\noutro\n"

    readme.write_text("no markers\n")
    assert not report.readme_update(readme, "| new |")
