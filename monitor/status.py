"""What the state database knows, per watch: for ``status`` and the status page.

Reads through a read-only connection, so it works while the daemon runs and
never blocks it. Nothing secret is in the database (URLs are stored masked),
and the output goes through the redactor anyway.
"""

from __future__ import annotations

import time
from typing import Any

from .config import Config
from .durations import format_duration
from .model import iso_time, spec_numbers
from .store import StateReader
from .timeline import share_available, spec_timeline

DAY = 86400.0
HISTORY_FOR_TIMELINES = 30 * DAY  # the state at the start of a window comes from older events


def collect_status(config: Config, now: float | None = None, *, timelines: bool = False) -> dict[str, Any]:
    """Per watch: health, watched specs, deliveries; with ``timelines``, 24 h and 7 d availability."""
    now = time.time() if now is None else now
    reader = StateReader.open(config.monitor.state_dir)
    data: dict[str, Any] = {
        "generated_at": now,
        "state_dir": str(config.monitor.state_dir),
        "database": str(reader.path) if reader else None,
        "watches": [],
        "outbox": {},
        "pending": [],
    }
    if reader is None:
        for w in config.watches:
            data["watches"].append(_watch_entry(w, None, None, None, {}))
        return data
    try:
        states = reader.watch_states()
        summary = reader.outbox_summary()
        totals: dict[str, int] = {}
        for counts in summary.values():
            for status, n in counts.items():
                totals[status] = totals.get(status, 0) + n
        data["outbox"] = totals
        data["pending"] = reader.pending()
        for w in config.watches:
            health, snapshot = reader.query(w.query.key)
            state = states.get(w.name, (None, None, None))[2]
            entry = _watch_entry(w, health, snapshot, state, summary.get(w.name, {}))
            if timelines:
                events = reader.events(watch=w.name, since=now - HISTORY_FOR_TIMELINES, limit=50000)
                for spec in entry["specs"]:
                    for window, span in (("24h", DAY), ("7d", 7 * DAY)):
                        segments = spec_timeline(events, spec["key"], now - span, now)
                        spec[f"timeline_{window}"] = {
                            "start": now - span,
                            "end": now,
                            "segments": [{"start": s.start, "end": s.end, "state": s.state} for s in segments],
                            "share_available": share_available(segments),
                        }
            data["watches"].append(entry)
    finally:
        reader.close()
    return data


def _watch_entry(w: Any, health: Any, snapshot: Any, state: Any, outbox: dict[str, int]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": w.name,
        "region": w.region,
        "job_type": w.job_type,
        "account": w.account,
        "query": w.query.key,
        "notify": list(w.notify),
        "last_poll": health.last_poll_at if health else None,
        "last_poll_time": iso_time(health.last_poll_at) if health else None,
        "last_success": health.last_success_at if health else None,
        "last_success_time": iso_time(health.last_success_at) if health else None,
        "consecutive_failures": health.failures if health else 0,
        "last_error": health.last_error if health else None,
        "degraded": bool(health and w.name in health.alerted),
        "snapshot_at": snapshot.taken_at if snapshot else None,
        "baseline_at": state.baseline_at if state else None,
        "specs": [],
        "deliveries": outbox,
    }
    if state is not None:
        for key, s in sorted(state.specs.items()):
            if not s.present:
                continue
            entry["specs"].append(
                {
                    "key": key,
                    "spec_code": s.info.get("spec_code", key),
                    "gpu_type": s.info.get("gpu_type", ""),
                    "gpu_num": s.info.get("gpu_num", 0),
                    **spec_numbers(str(s.info.get("core", "")), str(s.info.get("cpu", ""))),
                    "available": s.available,
                    "max_num": s.max_num,
                    "since": s.since,
                    "since_time": iso_time(s.since),
                    "since_exact": s.since_exact,
                    "flapping": s.flapping,
                    "pending_change": s.pending is not None,
                }
            )
    return entry


def print_status(data: dict[str, Any]) -> None:
    now = data["generated_at"]

    def ago(ts: float | None) -> str:
        return f"{format_duration(now - ts)} ago" if ts else "never"

    if data["database"] is None:
        print(f"no state yet in {data['state_dir']}: the daemon has not run (or state_dir differs)")
    for w in data["watches"]:
        flag = "DEGRADED" if w["degraded"] else ("failing" if w["consecutive_failures"] else "ok")
        print(f"watch {w['name']}  [{flag}]  {w['region']}, job type {w['job_type'] or 'any'}")
        print(f"  last poll {ago(w['last_poll'])}, last success {ago(w['last_success'])}")
        if w["consecutive_failures"]:
            n = w["consecutive_failures"]
            print(f"  {n} failed poll{'s' if n != 1 else ''} in a row: {w['last_error']}")
        if not w["specs"]:
            print("  no watched specs known yet" if w["baseline_at"] is None else "  no spec matches")
        width = max((len(s["key"]) for s in w["specs"]), default=0)
        for s in w["specs"]:
            state = "available" if s["available"] else "sold out"
            since = ago(s["since"]) if s["since_exact"] else f"at least {ago(s['since'])}"
            extra = " (flapping)" if s["flapping"] else ""
            print(f"  {s['key']:<{width}}  {state:<9}  max {s['max_num']:>3} nodes  since {since}{extra}")
        d = w["deliveries"]
        if d.get("pending") or d.get("held") or d.get("dropped"):
            print(
                f"  deliveries: {d.get('pending', 0)} pending, {d.get('held', 0)} held for quiet "
                f"hours, {d.get('dropped', 0)} dropped, {d.get('sent', 0)} sent"
            )
        print()
    if data["pending"]:
        print("pending deliveries:")
        for p in data["pending"]:
            err = f": {p['last_error']}" if p["last_error"] else ""
            print(
                f"  #{p['id']} {p['watch']} -> {p['notifier']} {p['url']} "
                f"(attempt {p['attempts'] + 1} at {time.strftime('%H:%M:%S', time.localtime(p['next_at']))}){err}"
            )
    else:
        print("no deliveries pending")
