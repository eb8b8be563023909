"""Events to messages: a short title and a markdown body, one per poll per watch.

Core module. The title goes to the email subject and the Slack heading; the
body lists each change on one line with its event id, so a person can tell a
duplicate from a new change. Long lists are cut at 20 lines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone, tzinfo
from typing import Any

from .durations import format_duration
from .model import (
    BASELINE,
    CLOCK_SKEW,
    DEGRADED,
    FLAPPING,
    HEALTH_KINDS,
    REMINDER,
    STABLE,
    Event,
    Message,
)

MAX_LINES = 20
_HEADLINE = {
    "available": "available",
    "unavailable": "sold out",
    "max_num": "max nodes changed",
    "added": "new",
    "removed": "removed",
    FLAPPING: "flapping",
    STABLE: "stable again",
    REMINDER: "still available",
}


def state_word(available: bool) -> str:
    return "available" if available else "sold out"


def spec_shape(data: dict[str, Any]) -> str:
    """ "8 × V100, 64 vCPUs, 512 GiB" from the spec fields an event carries."""
    parts = []
    gpu_num, gpu_type = data.get("gpu_num") or 0, data.get("gpu_type") or ""
    if gpu_num:
        parts.append(f"{gpu_num} × {gpu_type.upper() or 'accelerator'}")
    elif gpu_type:
        parts.append(gpu_type.upper())
    else:
        parts.append("CPU only")
    if data.get("core"):
        parts.append(f"{data['core']} vCPUs")
    if data.get("cpu"):
        parts.append(f"{data['cpu']} GiB")
    return ", ".join(parts)


def _lasted(seconds: float | None, exact: bool) -> str:
    if seconds is None:
        return ""
    text = format_duration(seconds)
    return text if exact else f"at least {text} (since monitoring started)"


def event_line(event: Event) -> str:
    """One markdown line for one event."""
    d = event.data
    code = f"**{d.get('spec_code') or event.spec_key}**"
    shape = spec_shape(d)
    nodes = f"max {d.get('max_num')} nodes"
    tag = f"(id `{event.id}`)"
    kind = event.kind
    if kind == "available":
        return f"- {code} ({shape}): sold out → **available**, {nodes} {tag}"
    if kind == "unavailable":
        lasted = _lasted(d.get("lasted"), d.get("lasted_exact", True))
        was = f"; was available for {lasted}" if lasted else ""
        return f"- {code} ({shape}): available → **sold out**{was} {tag}"
    if kind == "max_num":
        return (
            f"- {code} ({shape}): max nodes {d.get('old_max_num')} → **{d.get('max_num')}**, "
            f"{state_word(d.get('available', False))} {tag}"
        )
    if kind == "added":
        return f"- {code} ({shape}): **new in the catalog**, {state_word(d.get('available', False))}, {nodes} {tag}"
    if kind == "removed":
        lasted = _lasted(d.get("lasted"), d.get("lasted_exact", True))
        was = f"; was available for {lasted}" if lasted else ""
        return f"- {code} ({shape}): **gone from the catalog**{was} {tag}"
    if kind == FLAPPING:
        return (
            f"- {code} ({shape}): **flapping**, availability changed {d.get('changes')} times "
            f"within an hour; now {state_word(d.get('available', False))}. No more messages "
            f"for it until it has been stable for {format_duration(d.get('quiet_for', 3600))} {tag}"
        )
    if kind == STABLE:
        return (
            f"- {code} ({shape}): stable again for {format_duration(d.get('stable_for', 0))}, "
            f"now **{state_word(d.get('available', False))}**, {nodes} {tag}"
        )
    if kind == REMINDER:
        lasted = _lasted(d.get("available_for"), d.get("available_exact", True))
        return f"- {code} ({shape}): reminder, **still available** for {lasted}, {nodes} {tag}"
    return f"- {kind} {code} {tag}"


def _times(at: float, tz: tzinfo | None) -> str:
    utc = datetime.fromtimestamp(at, timezone.utc)
    local = utc.astimezone(tz)
    text = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    if local.utcoffset() != utc.utcoffset() or tz is not None:
        text += f" ({local.strftime('%H:%M:%S %Z').strip() or local.strftime('%H:%M:%S %z')} local)"
    return text


def _cut(lines: Sequence[str]) -> list[str]:
    if len(lines) <= MAX_LINES:
        return list(lines)
    return [*lines[:MAX_LINES], f"- ... and {len(lines) - MAX_LINES} more"]


def render_message(
    watch: str,
    events: Sequence[Event],
    *,
    region: str,
    job_type: str | None,
    tz: tzinfo | None = None,
) -> Message:
    """The one message for all events of one poll of one watch."""
    if not events:
        raise ValueError("no events to render")
    at = events[0].at
    footer = f"Watch **{watch}** · region {region} · job type {job_type or 'any'} · detected {_times(at, tz)}"
    ids = tuple(e.id for e in events)
    urgent = any(e.kind == "available" or (e.kind == "added" and e.data.get("available")) for e in events)
    health = [e for e in events if e.kind in HEALTH_KINDS]
    changes = [e for e in events if e.kind not in HEALTH_KINDS]
    blocks: list[str] = []
    titles: list[str] = []
    for e in health:
        title, block = _health_block(e)
        titles.append(title)
        blocks.append(block)
    if changes:
        blocks.append("\n".join(_cut([event_line(e) for e in changes])))
        titles.append(_changes_title(changes))
    title = f"{watch}: " + "; ".join(titles)
    body = "\n\n".join([*blocks, footer])
    return Message(title=title, body=body, event_ids=ids, urgent=urgent)


def _changes_title(changes: Sequence[Event]) -> str:
    if len(changes) == 1:
        e = changes[0]
        code = e.data.get("spec_code") or e.spec_key
        return f"{code} {_HEADLINE.get(e.kind, e.kind)}"
    counts = Counter(e.kind for e in changes)
    order = ["available", "unavailable", "added", "removed", "max_num", FLAPPING, STABLE, REMINDER]
    parts = [f"{counts[k]} {_HEADLINE[k]}" for k in order if counts.get(k)]
    return ", ".join(parts)


def _health_block(e: Event) -> tuple[str, str]:
    d = e.data
    tag = f"(id `{e.id}`)"
    if e.kind == BASELINE:
        available = d.get("available", [])
        watched = d.get("watched", 0)
        title = f"monitoring started, {len(available)} of {watched} watched specs available"
        if not watched:
            return title, f"Monitoring started. No spec in the catalog matches this watch yet. {tag}"
        lines = [
            f"- **{s.get('spec_code') or s.get('key')}** ({spec_shape(s)}): available, max {s.get('max_num')} nodes"
            for s in available
        ]
        sold_out = d.get("unavailable", [])
        head = f"Monitoring started. Available now: {len(available)} of {watched} watched specs. {tag}"
        parts = [head]
        if lines:
            parts.append("\n".join(_cut(lines)))
        if sold_out:
            shown = ", ".join(sold_out[:MAX_LINES])
            more = f" and {len(sold_out) - MAX_LINES} more" if len(sold_out) > MAX_LINES else ""
            parts.append(f"Sold out now: {shown}{more}")
        return title, "\n\n".join(parts)
    if e.kind == DEGRADED:
        since = d.get("since") or e.at
        title = "monitoring degraded"
        block = (
            f"**Monitoring degraded**: {d.get('failures')} polls in a row failed "
            f"(since {datetime.fromtimestamp(since, timezone.utc):%H:%M UTC}). "
            f"Reason: {d.get('reason')}. Capacity changes cannot be seen until this is fixed; "
            f"they will be reported on the first good poll. {tag}"
        )
        return title, block
    if e.kind == CLOCK_SKEW:
        skew = float(d.get("skew", 0))
        direction = "behind" if skew > 0 else "ahead of"
        amount = format_duration(round(abs(skew) / 60) * 60)  # a measured offset: round, not floor
        title = f"this host's clock is {amount} {direction} the API's"
        block = (
            f"**Clock skew**: the clock of the host running modelarts-monitor is "
            f"{amount} {direction} the API's. Requests are signed with the API's "
            f"time meanwhile, so monitoring goes on; fix the host clock (enable NTP). {tag}"
        )
        return title, block
    title = f"monitoring recovered after {format_duration(d.get('down_for', 0))}"
    block = (
        f"**Monitoring recovered** after {format_duration(d.get('down_for', 0))} "
        f"({d.get('failures')} failed polls; last reason: {d.get('reason')}). {tag}"
    )
    return title, block


def render_test_message(notifier: str) -> Message:
    return Message(
        title=f"modelarts-monitor test message ({notifier})",
        body=(
            f"This is a test from **modelarts-monitor** to notifier **{notifier}**. "
            "If you can read it, alerts will reach you here."
        ),
        event_ids=(),
    )


def render_digest(notifier: str, held: Sequence[tuple[str, str]]) -> Message:
    """One message for everything quiet hours held back: (title, body) pairs in order."""
    count = len(held)
    title = f"modelarts-monitor: {count} message{'s' if count != 1 else ''} held during quiet hours"
    parts = [f"Quiet hours of notifier **{notifier}** are over. Held back meanwhile:"]
    shown = held[:MAX_LINES]
    for item_title, body in shown:
        parts.append(f"**{item_title}**\n\n{body}")
    if count > len(shown):
        parts.append(f"... and {count - len(shown)} more")
    return Message(title=title, body="\n\n---\n\n".join(parts), event_ids=())
