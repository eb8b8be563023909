"""Run every benchmark and print one table: `python3 tasks.py bench` (about 9 minutes).

    python3 tasks.py bench             # everything, full length
    python3 tasks.py bench --quick     # shorter scale and memory runs (for development)
    python3 tasks.py bench --write     # also record the results in bench/README.md

Ratios are taken side by side in one run, because these machines are shared
and noisy; absolute times are reported only for context.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import latency  # noqa: E402
import memory  # noqa: E402
import overhead  # noqa: E402
import scale  # noqa: E402
import startup  # noqa: E402

Row = tuple[str, str, str, bool | None]  # what, target, result, met (None: for information)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def rows(results: dict[str, Any]) -> list[Row]:
    o, lat, sc, mem, st = (results[k] for k in ("overhead", "latency", "scale", "memory", "startup"))
    interval = lat["interval_s"]
    expected = round(sc["cycles"])
    return [
        (
            "overhead: CPU per poll / bare httpx GET + JSON decode (answers as usual, repeating)",
            "≤ 1.3",
            f"{o['same']['ratio']:.2f} ({o['same']['monitor_ms']:.2f} / {o['same']['bare_ms']:.2f} ms)",
            o["same"]["ratio"] <= 1.3,
        ),
        ("overhead: every answer differs in its bytes (parsed anew)", "", f"{o['bytes']['ratio']:.2f}", None),
        ("overhead: the catalog changes at every poll (stored anew)", "", f"{o['catalog']['ratio']:.2f}", None),
        (
            f"latency: p95 over {lat['changes']} changes, {interval:g} s interval",
            f"≤ {interval + 0.5:g} s",
            f"{lat['p95_s']:.2f} s",
            lat["p95_s"] <= interval + 0.5,
        ),
        (
            "latency: mean (polling's floor is half the interval)",
            f"≈ {interval / 2:g} s",
            f"{lat['mean_s']:.2f} s (p50 {lat['p50_s']:.2f}, max {lat['max_s']:.2f}; {lat['reported']} reported)",
            abs(lat["mean_s"] - interval / 2) <= 1.0 and lat["reported"] == lat["changes"],
        ),
        (
            f"scale: {scale.WATCHES} watches, {scale.QUERIES} queries, requests per query in {sc['window_s']} s",
            f"exactly {expected} each",
            f"{sc['requests_per_query_min']}–{sc['requests_per_query_max']}, {sc['queries_polled']} queries, "
            f"gaps {sc['min_gap_s']}–{sc['max_gap_s']} s",
            sc["queries_polled"] == scale.QUERIES
            and abs(sc["requests_per_query_min"] - expected) <= 1
            and abs(sc["requests_per_query_max"] - expected) <= 1
            and sc["min_gap_s"] > scale.INTERVAL / 2,
        ),
        (
            "scale: daemon CPU (one core)",
            "< 30 %",
            f"{sc['cpu_percent_of_one_core']} %",
            sc["cpu_percent_of_one_core"] < 30,
        ),
        ("scale: schedule drift p99", "< 0.5 s", f"≤ {sc['drift_p99_s']} s", sc["drift_p99_s"] < 0.5),
        (
            "scale: no growing backlog (drift p99 1st → 2nd half; outbox at end)",
            "flat, 0",
            f"≤ {sc['drift_p99_first_half_s']} → ≤ {sc['drift_p99_second_half_s']} s; {sc['outbox_pending_end']:g}",
            sc["drift_p99_second_half_s"] <= max(sc["drift_p99_first_half_s"], 0.05) and sc["outbox_pending_end"] == 0,
        ),
        (
            f"memory: RSS with {mem['watches']} watches (apprise loaded)",
            "< 80 MiB",
            f"{mem['rss_mib_after_1000_polls']} MiB",
            mem["rss_mib_after_1000_polls"] < 80,
        ),
        (
            f"memory: growth from poll 1,000 to {mem['polls']:,}",
            "< 2 MiB",
            f"{mem['growth_mib']} MiB",
            mem["growth_mib"] < 2,
        ),
        (
            "start-up: `modelarts-monitor --help` (median)",
            "< 0.15 s",
            f"{st['help_median_s']} s",
            st["help_median_s"] < 0.15,
        ),
        (
            "start-up: `modelarts-monitor check` (median)",
            "< 0.4 s",
            f"{st['check_median_s']} s",
            st["check_median_s"] < 0.4,
        ),
    ]


def table(lines: list[Row]) -> str:
    out = ["| benchmark | target | result | met |", "|---|---|---|---|"]
    for what, target, result, met in lines:
        mark = "—" if met is None else ("yes" if met else "**no**")
        out.append(f"| {what} | {target} | {result} | {mark} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter scale (60 s) and memory (3,000 polls) runs")
    parser.add_argument("--write", action="store_true", help="record the results in bench/README.md")
    args = parser.parse_args()
    started = time.time()
    results: dict[str, Any] = {}
    steps = [
        ("startup", startup.run),
        ("overhead", overhead.run),
        ("latency", latency.run),
        ("memory", lambda: memory.run(3000 if args.quick else memory.POLLS)),
        ("scale", lambda: scale.run(60.0 if args.quick else 300.0)),
    ]
    for name, step in steps:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = step()
        print(json.dumps(results[name]), file=sys.stderr, flush=True)
    lines = rows(results)
    text = table(lines)
    took = time.time() - started
    print(text)
    print(f"\n{machine()}; took {took / 60:.1f} min")
    (HERE / "results.json").write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
    if args.write:
        readme = HERE / "README.md"
        stamp = time.strftime("%Y-%m-%d")
        block = (
            f"<!-- results -->\nMeasured {stamp} on {machine()} "
            f"({'quick' if args.quick else 'full'} run, {took / 60:.1f} min):\n\n{text}\n<!-- /results -->"
        )
        readme.write_text(re.sub(r"<!-- results -->.*?<!-- /results -->", block, readme.read_text(), flags=re.S))
    return 0 if all(met is not False for *_, met in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
