"""The status page: server-rendered HTML that reads at a glance, without JavaScript.

Core module: a pure function from the status data (the same as ``status
--json`` and ``/api/status``) to HTML. Every value is escaped; no secret and
no notifier URL is ever part of the data.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from . import __version__
from .durations import format_duration

REFRESH_SECONDS = 30
_STATE_LABEL = {
    "available": "available",
    "sold_out": "sold out",
    "flapping": "flapping",
    "absent": "not in the catalog",
    "unknown": "unknown",
}

CSS = """
:root { --ok:#1a7f37; --bad:#cf222e; --warn:#bf8700; --muted:#6e7781; --line:#d0d7de; --bg:#f6f8fa;
        --avail:#2da44e; --soldout:#f0a8a8; --flap:#e3b341; --absent:#ffffff; --unknown:#eaeef2; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       background: var(--bg); }
header { background: #24292f; color: #fff; padding: 12px 20px; display: flex; flex-wrap: wrap;
         align-items: baseline; gap: 4px 16px; }
header h1 { font-size: 18px; margin: 0; }
header .meta { color: #d0d7de; font-size: 13px; }
main { max-width: 1200px; margin: 0 auto; padding: 16px; }
.summary { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 16px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 150px; }
.card .n { font-size: 24px; font-weight: 600; }
.card .l { color: var(--muted); font-size: 13px; }
.card.bad .n { color: var(--bad); }
section.watch { background: #fff; border: 1px solid var(--line); border-radius: 8px; margin-bottom: 16px;
                overflow: hidden; }
section.watch.degraded { border: 2px solid var(--bad); }
section.watch > h2 { margin: 0; padding: 10px 14px; font-size: 16px; display: flex; flex-wrap: wrap; gap: 6px 12px;
                     align-items: baseline; border-bottom: 1px solid var(--line); }
section.watch > h2 .where { font-weight: 400; color: var(--muted); font-size: 13px; }
.badge { display: inline-block; border-radius: 12px; padding: 1px 9px; font-size: 12px; font-weight: 600;
         white-space: nowrap; }
.badge.ok, .badge.available { background: #dafbe1; color: var(--ok); }
.badge.degraded, .badge.failing { background: #ffebe9; color: var(--bad); }
.badge.sold_out { background: #ffebe9; color: #a40e26; }
.badge.flapping { background: #fff8c5; color: #7d4e00; }
.alert { background: #ffebe9; color: #82071e; padding: 8px 14px; border-bottom: 1px solid #ffcecb; }
.note { color: var(--muted); padding: 8px 14px; font-size: 13px; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 8px 10px; border-bottom: 1px solid #eaeef2; vertical-align: middle; }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
tr:last-child td { border-bottom: 0; }
td.code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; white-space: nowrap; }
td.num, td.since { text-align: right; white-space: nowrap; }
td.since { text-align: left; }
td.timeline { width: 28%; }
.bar { width: 100%; min-width: 140px; height: 14px; display: block; border-radius: 3px; overflow: hidden; }
.bar rect.available { fill: var(--avail); }
.bar rect.sold_out { fill: var(--soldout); }
.bar rect.flapping { fill: var(--flap); }
.bar rect.absent { fill: var(--absent); }
.bar rect.unknown { fill: var(--unknown); }
.axis { display: flex; justify-content: space-between; gap: 6px; color: var(--muted); font-size: 11px;
        white-space: nowrap; }
.share { color: var(--muted); font-size: 12px; }
.legend { display: flex; flex-wrap: wrap; gap: 12px; color: var(--muted); font-size: 12px; margin: 4px 0 16px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 4px;
            vertical-align: -2px; border: 1px solid var(--line); }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 12px; }
@media (max-width: 700px) {
  main { padding: 8px; }
  thead { display: none; }
  table, tbody, tr, td { display: block; width: 100%; }
  tr { border-bottom: 1px solid var(--line); padding: 6px 0; }
  td { border: 0; padding: 3px 12px; }
  td.num { text-align: left; }
  td.code { white-space: normal; word-break: break-all; }
  td.timeline { width: 100%; }
  td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); font-size: 12px; }
}
"""


def _ago(now: float, ts: float | None) -> str:
    return f"{format_duration(now - ts)} ago" if ts else "never"


def _clock(ts: float) -> str:
    return time.strftime("%a %H:%M", time.localtime(ts))


def timeline_svg(segments: list[dict[str, Any]], start: float, end: float, label: str) -> str:
    """An inline SVG bar, one rect per segment, each with a tooltip."""
    span = max(end - start, 1.0)
    rects = []
    for seg in segments:
        x = (seg["start"] - start) / span * 1000
        w = max((seg["end"] - seg["start"]) / span * 1000, 0.5)
        title = (
            f"{_STATE_LABEL.get(seg['state'], seg['state'])}: {_clock(seg['start'])} – {_clock(seg['end'])} "
            f"({format_duration(seg['end'] - seg['start'])})"
        )
        rects.append(
            f'<rect class="seg {escape(seg["state"])}" x="{x:.2f}" y="0" width="{w:.2f}" height="14">'
            f"<title>{escape(title)}</title></rect>"
        )
    return (
        f'<svg class="bar" role="img" aria-label="{escape(label)}" viewBox="0 0 1000 14" preserveAspectRatio="none">'
        + "".join(rects)
        + "</svg>"
    )


def _share(segments: dict[str, Any]) -> str:
    share = segments.get("share_available")
    return "no data" if share is None else f"{share * 100:.0f}% available"


def _spec_row(spec: dict[str, Any], now: float) -> str:
    state = "flapping" if spec.get("flapping") else ("available" if spec["available"] else "sold_out")
    gpu = f"{spec['gpu_num']} × {escape(str(spec['gpu_type']).upper() or '-')}" if spec["gpu_num"] else "CPU"
    since = _ago(now, spec["since"]) if spec.get("since_exact") else f"≥ {_ago(now, spec['since'])}"
    cells = [
        f'<td class="code" data-label="spec">{escape(spec["spec_code"])}</td>',
        f'<td data-label="accelerators">{gpu}</td>',
        f'<td data-label="now"><span class="badge {state}">{_STATE_LABEL[state]}</span></td>',
        f'<td class="num" data-label="max nodes">{spec["max_num"]}</td>',
        f'<td class="since" data-label="since">{escape(since)}</td>',
    ]
    for window in ("24h", "7d"):
        t = spec.get(f"timeline_{window}")
        if t is None:
            cells.append(f'<td data-label="{window}"></td>')
            continue
        svg = timeline_svg(t["segments"], t["start"], t["end"], f"availability over the last {window}")
        cells.append(
            f'<td class="timeline t{window}" data-label="{window}">{svg}'
            f'<div class="axis"><span>{window} ago</span><span class="share" title="share of the monitored time">'
            f"{_share(t)}</span><span>now</span></div></td>"
        )
    return f'<tr class="spec {state}">' + "".join(cells) + "</tr>"


def _watch_section(w: dict[str, Any], now: float, failure_alert_after: int) -> str:
    failing = w["consecutive_failures"]
    degraded = w["degraded"] or failing >= failure_alert_after
    badge = ("degraded", "DEGRADED") if degraded else (("failing", "failing") if failing else ("ok", "ok"))
    where = f"{escape(w['region'])} · job type {escape(w['job_type'] or 'any')} · last poll {_ago(now, w['last_poll'])}"
    parts = [
        f'<section class="watch {badge[0]}" id="watch-{escape(w["name"])}">',
        f'<h2><span class="name">{escape(w["name"])}</span> <span class="badge {badge[0]}">{badge[1]}</span>'
        f' <span class="where">{where}</span></h2>',
    ]
    if failing:
        parts.append(
            f'<div class="alert"><strong>{failing} failed poll{"s" if failing != 1 else ""} in a row</strong>'
            f" (last success {_ago(now, w['last_success'])}): {escape(w['last_error'] or '')}</div>"
        )
    if not w["specs"]:
        if w["baseline_at"] is not None:
            text = "no spec in the catalog matches this watch"
        elif failing:
            text = "no successful poll yet"
        else:
            text = "waiting for the first poll"
        parts.append(f'<div class="note">{text}</div>')
    else:
        parts.append(
            "<table><thead><tr><th>spec</th><th>accelerators</th><th>now</th><th>max nodes</th><th>since</th>"
            "<th>last 24 hours</th><th>last 7 days</th></tr></thead><tbody>"
        )
        parts += [_spec_row(s, now) for s in w["specs"]]
        parts.append("</tbody></table>")
    pending = w["deliveries"].get("pending", 0)
    if pending:
        parts.append(f'<div class="note">{pending} message{"s" if pending != 1 else ""} waiting for delivery</div>')
    parts.append("</section>")
    return "".join(parts)


def render_status_page(data: dict[str, Any], *, failure_alert_after: int = 3) -> str:
    now = data["generated_at"]
    watches = data["watches"]
    degraded = sum(1 for w in watches if w["degraded"] or w["consecutive_failures"] >= failure_alert_after)
    specs = [s for w in watches for s in w["specs"]]
    available = sum(1 for s in specs if s["available"])
    pending = data["outbox"].get("pending", 0)
    cards = [
        ("", len(watches), "watches"),
        ("bad" if degraded else "", degraded, "degraded"),
        ("", f"{available}/{len(specs)}", "watched specs available"),
        ("bad" if pending else "", pending, "messages pending"),
    ]
    summary = "".join(
        f'<div class="card {cls}"><div class="n">{escape(str(n))}</div><div class="l">{label}</div></div>'
        for cls, n, label in cards
    )
    legend = "".join(
        f'<span><i style="background:var(--{var})"></i>{label}</span>'
        for var, label in (
            ("avail", "available"),
            ("soldout", "sold out"),
            ("flap", "flapping"),
            ("unknown", "unknown / not monitored"),
            ("absent", "not in the catalog"),
        )
    )
    body = "".join(_watch_section(w, now, failure_alert_after) for w in watches) or (
        '<div class="note">No watches are configured.</div>'
    )
    updated = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>modelarts-monitor: {available}/{len(specs)} available{", DEGRADED" if degraded else ""}</title>
<style>{CSS}</style></head>
<body><header><h1>modelarts-monitor</h1><span class="meta">updated {escape(updated)} · refreshes every
{REFRESH_SECONDS} s · <a href="api/status" style="color:#d0d7de">JSON</a> ·
<a href="metrics" style="color:#d0d7de">metrics</a></span></header>
<main><div class="summary">{summary}</div><div class="legend">{legend}</div>{body}</main>
<footer>modelarts-monitor {escape(__version__)}</footer></body></html>
"""
