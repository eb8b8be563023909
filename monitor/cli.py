"""The command line: the one place that wires configuration, store, client and daemon.

Heavy modules (httpx, anyio, apprise) are imported inside the commands that
need them, so ``--help`` and ``check`` start fast. Exit statuses: 0 success,
1 failure, 64 bad command line, 78 bad configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError, MonitorError, UsageError

if TYPE_CHECKING:
    from .config import Config

if sys.version_info < (3, 11):  # pragma: no cover - anyio brings the backport there
    from exceptiongroup import BaseExceptionGroup

DESCRIPTION = (
    "Watch the Huawei Cloud ModelArts spec catalog and tell your team in Slack or by email "
    "when a GPU or Ascend spec gains or loses capacity."
)
EPILOG = """\
The configuration is read from --config, else $MODELARTS_MONITOR_CONFIG, else
$CONFIGURATION_DIRECTORY/config.toml (under systemd), else
/etc/modelarts-monitor/config.toml. New here? Run `modelarts-monitor demo`.
Exit status: 0 ok, 1 failure, 64 bad command line, 78 bad configuration.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="modelarts-monitor",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    config_help = "configuration file (default: see the end of `modelarts-monitor --help`)"
    parser.add_argument("-c", "--config", metavar="PATH", help=config_help)
    common = _Parser(add_help=False)
    # Accepted after the command too; there it overrides one given before it.
    common.add_argument("-c", "--config", metavar="PATH", help=config_help, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    sub.add_parser(
        "run",
        parents=[common],
        help="run the daemon",
        description="Poll, detect and notify until stopped (SIGTERM/SIGINT); SIGHUP reloads.",
    )
    p = sub.add_parser("check", parents=[common], help="validate the configuration")
    p.add_argument("--online", action="store_true", help="also make one authenticated call per account")
    p = sub.add_parser("once", parents=[common], help="poll now and print watched specs and changes")
    p.add_argument("--watch", metavar="NAME", action="append", help="only this watch (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--notify", action="store_true", help="store the result and send the messages (for cron or timers)")
    p = sub.add_parser("status", parents=[common], help="show what the state database knows")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("history", parents=[common], help="show past events")
    p.add_argument("--watch", metavar="NAME", help="only this watch")
    p.add_argument("--since", metavar="DURATION", default="24h", help="how far back (default 24h)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("test-notify", parents=[common], help="send a test message to the notifiers")
    p.add_argument("--notifier", metavar="NAME", action="append", help="only this notifier (repeatable)")
    p = sub.add_parser(
        "simulate",
        epilog="Control API on the same port (loopback only): GET/POST/DELETE /_sim/specs[/<spec_code>], "
        "POST/DELETE /_sim/faults, POST /_sim/clock, GET /_sim/requests; see the README.",
        help="serve the stand-in ModelArts/IAM API",
        description="A local stand-in for the ModelArts and IAM APIs that checks "
        "signatures and tokens like the real ones, with capacity that changes over time.",
    )
    p.add_argument("--listen", metavar="ADDR", default="127.0.0.1:8086", help="HOST:PORT (default 127.0.0.1:8086)")
    p.add_argument("--scenario", metavar="FILE", help="scenario TOML (default: the built-in demo scenario)")
    p = sub.add_parser(
        "demo",
        help="run the simulator and the daemon together and show alerts",
        description="Start the simulator, a local alert receiver and the daemon with a "
        "demo configuration, and print each alert as it arrives. Ctrl-C stops.",
    )
    p.add_argument("--duration", metavar="DURATION", help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--keep", metavar="DIR", help="keep the demo's configuration and state in DIR")
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    if "run" in args:
        from .signals import install_early_handlers

        install_early_handlers()
    sys.exit(run_command(args))


def run_command(argv: list[str]) -> int:
    parser = build_parser()
    # argparse would report an unknown option before the command as a missing command.
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        name = argv[i].split("=", 1)[0]
        if name not in ("-h", "--help", "--version", "-c", "--config"):
            parser.error(f"unrecognized option {name} (options of a command come after it: COMMAND {name})")
        i += 2 if name in ("-c", "--config") and "=" not in argv[i] else 1
    args = parser.parse_args(argv)
    handler = globals()[f"cmd_{args.command.replace('-', '_')}"]
    try:
        try:
            return int(handler(args) or 0)
        except BaseExceptionGroup as group:
            raise _single(group) from None
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        n = len(exc.problems)
        print(f"configuration rejected ({n} problem{'s' if n != 1 else ''})", file=sys.stderr)
        return EXIT_CONFIG
    except MonitorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        from .redact import redact

        print(f"error: unexpected {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        if os.environ.get("MODELARTS_MONITOR_DEBUG"):
            import traceback

            traceback.print_exc()
        else:
            print("set MODELARTS_MONITOR_DEBUG=1 to see the traceback, and please report it", file=sys.stderr)
        return EXIT_FAILURE


# -- helpers ---------------------------------------------------------------------------------------
def _single(group: BaseExceptionGroup) -> BaseException:
    """The one exception a task group wrapped, so it gets its usual clear message."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for leaf in leaves:
        if isinstance(leaf, KeyboardInterrupt):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, MonitorError):
            return leaf
    return leaves[0] if len(leaves) == 1 else group


def _load(args: argparse.Namespace, *, check_urls: bool = False, resolve_secrets: bool = True) -> Config:
    """The configuration; ``check_urls`` lets apprise judge notifier URLs (it is slow to load)."""
    from .config import default_config_path, load_config

    if args.config == "":
        raise UsageError("--config: the path is empty")
    checkers: dict[str, Any] = {}
    if check_urls:
        from .urls import check_apprise_config, check_url

        checkers = {"url_checker": check_url, "config_checker": check_apprise_config}
    return load_config(args.config or default_config_path(), resolve_secrets=resolve_secrets, **checkers)


def _print_json(data: Any) -> None:
    from .redact import redact_data

    print(json.dumps(redact_data(data), indent=2, ensure_ascii=False))


def _fmt_time(ts: float | None) -> str:
    if not ts:
        return "never"
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    import time

    from .durations import format_duration

    return f"{format_duration(time.time() - ts)} ago"


# -- commands --------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from .signals import install_early_handlers

    install_early_handlers()  # (main() already did, unless called another way)
    config = _load(args, check_urls=True)
    from .logs import setup_logging

    setup_logging(config.monitor.log_format, config.monitor.log_level)
    import logging

    log = logging.getLogger("monitor")
    for warning in config.warnings:
        log.warning("%s", warning)
    import anyio

    from .daemon import Daemon

    daemon = Daemon(config)
    try:
        anyio.run(lambda: daemon.run(handle_signals=True))
    except MonitorError as exc:
        log.error("%s", exc)
        return exc.exit_status
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args, check_urls=True)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    queries = config.queries()
    urls = sum(len(n.urls) + (1 if n.config else 0) for n in config.notifiers.values())
    print(
        f"{config.path}: OK: {len(config.accounts)} account(s), {len(config.notifiers)} notifier(s) "
        f"with {urls} URL(s), {len(config.watches)} watch(es) over {len(queries)} distinct quer"
        f"{'y' if len(queries) == 1 else 'ies'}; state in {config.monitor.state_dir}"
    )
    if not args.online:
        return EXIT_OK
    import anyio

    return anyio.run(_check_online, config)


async def _check_online(config: Config) -> int:
    """One authenticated call per account and region its watches use, with a verdict each."""
    import time

    import anyio

    from .api.client import ModelArtsClient, build_http_client
    from .errors import PollError

    results: dict[str, list[tuple[str, str, bool]]] = {}

    async def one(name: str) -> None:
        account = config.accounts[name]
        first_by_region = {w.region: w for w in reversed([w for w in config.watches if w.account == name])}
        regions = sorted(first_by_region)
        async with build_http_client(account, config.monitor.timeout) as http:
            client = ModelArtsClient(account, http, timeout=config.monitor.timeout)
            for region in regions:  # one after another: the first call shows whether the key works
                started = time.monotonic()
                try:
                    snapshot = await client.fetch_snapshot(first_by_region[region].query)
                    took = (time.monotonic() - started) * 1000
                    verdict = f"OK: authenticated ({account.auth}), {len(snapshot.specs)} specs listed in {took:.0f} ms"
                    results[name].append((region, verdict, True))
                except PollError as exc:
                    results[name].append((region, f"FAILED: {exc.describe()}", False))

    for name in config.accounts:
        results[name] = []
    async with anyio.create_task_group() as tg:
        for name in config.accounts:
            tg.start_soon(one, name)
    checked = failed = 0
    for name in config.accounts:
        if not results[name]:
            print(f"account {name}: not used by any watch (not checked)")
        for region, verdict, ok in results[name]:
            checked += 1
            failed += not ok
            print(f"account {name}, region {region}: {verdict}")
    if failed:
        print(f"{failed} of {checked} account/region check(s) failed", file=sys.stderr)
        return EXIT_FAILURE
    print(f"all {checked} account/region check(s) passed")
    return EXIT_OK


def cmd_once(args: argparse.Namespace) -> int:
    config = _load(args, check_urls=args.notify)
    if args.watch:
        unknown = [w for w in args.watch if w not in {x.name for x in config.watches}]
        if unknown:
            known = ", ".join(w.name for w in config.watches)
            print(f"error: no watch named {', '.join(unknown)} (configured: {known})", file=sys.stderr)
            return EXIT_USAGE
    import anyio

    from .logs import setup_logging

    setup_logging("text", "warning")  # quiet unless something is wrong: cron mails any output
    return anyio.run(_once, config, args)


async def _once(config: Config, args: argparse.Namespace) -> int:
    import time

    import anyio

    from .daemon import Daemon
    from .detect import process_poll
    from .errors import PollError
    from .model import Snapshot

    selected = set(args.watch or [w.name for w in config.watches])
    daemon = Daemon(config)
    report: list[dict[str, Any]] = []
    failed = 0
    if args.notify:
        import anyio.to_thread

        from .store import SqliteStore

        daemon.store = await anyio.to_thread.run_sync(SqliteStore.open, config.monitor.state_dir)
        await daemon.remember_clock_alerts()
    else:
        daemon.store = None
    try:
        await daemon.build_clients()
        queries = [(q, [w for w in ws if w.name in selected]) for q, ws in config.queries().items()]
        queries = [(q, ws) for q, ws in queries if ws]
        states, stored = await _load_state(config, daemon, queries)
        outcomes: dict[str, Snapshot | PollError] = {}

        async def poll(query: Any) -> None:
            outcomes[query.key] = await daemon.poll(query)

        async with anyio.create_task_group() as tg:
            for q, _ in queries:
                tg.start_soon(poll, q)
        now = time.time()
        for query, watches in queries:
            health, previous = stored[query.key]
            outcome = outcomes[query.key]
            result = process_poll(
                watches,
                health,
                previous,
                {w.name: states.get(w.name) for w in watches},
                outcome,
                now,
                failure_alert_after=config.monitor.failure_alert_after,
            )
            if result.error is not None:
                failed += 1
            if args.notify:
                from .store import SqliteStore

                assert isinstance(daemon.store, SqliteStore)
                daemon.add_clock_events(query, watches, result, now)
                outgoing = daemon.messages_for(watches, result, now)
                await anyio.to_thread.run_sync(daemon.store.commit_poll, query.key, result, outgoing, now)
            for w in watches:
                report.append(_once_entry(w, outcome, result, states.get(w.name)))
        if args.notify:
            sent = await _send_pending(daemon)
            if sent:
                print(f"{sent} failed deliveries stay queued for the next run", file=sys.stderr)
    finally:
        for client in daemon.clients.values():
            await client.http.aclose()
        if daemon.store is not None:
            daemon.store.close()
    if args.json:
        _print_json({"watches": report})
    else:
        _print_once(report)
    return EXIT_FAILURE if failed else EXIT_OK


async def _load_state(config: Config, daemon: Any, queries: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    from .detect import QueryHealth
    from .store import StateReader

    states: dict[str, Any] = {}
    stored: dict[str, Any] = {q.key: (QueryHealth(), None) for q, _ in queries}
    if daemon.store is not None:
        for q, ws in queries:
            stored[q.key] = daemon.store.load_query(q.key)
            states.update(daemon.store.load_watch_states([w.name for w in ws]))
        return states, stored
    reader = StateReader.open(config.monitor.state_dir)
    if reader is None:
        return states, stored
    try:
        all_states = reader.watch_states()
        for q, ws in queries:
            health, snapshot = reader.query(q.key)
            stored[q.key] = (health or QueryHealth(), snapshot)
            for w in ws:
                if w.name in all_states:
                    states[w.name] = all_states[w.name][2]
    finally:
        reader.close()
    return states, stored


async def _send_pending(daemon: Any) -> int:
    """Deliver everything due now, once; returns how many deliveries failed."""
    import anyio

    before = daemon.delivery_failures
    limiter = anyio.CapacityLimiter(8)
    async with anyio.create_task_group() as tg:
        await daemon.deliver_due(tg, limiter)
    return int(daemon.delivery_failures - before)


def _once_entry(watch: Any, outcome: Any, result: Any, previous: Any) -> dict[str, Any]:
    from .detect import selects
    from .errors import PollError
    from .model import Snapshot, spec_numbers

    entry: dict[str, Any] = {"watch": watch.name, "region": watch.region, "job_type": watch.job_type}
    if isinstance(outcome, PollError):
        entry["error"] = outcome.describe()
        entry["code"] = outcome.code
    if result.error is not None and "error" not in entry:
        entry["error"] = result.error.describe()
    if isinstance(outcome, Snapshot):
        entry["specs"] = [
            {
                "spec_code": s.spec_code,
                "key": s.key,
                "gpu_type": s.gpu_type,
                "gpu_num": s.gpu_num,
                **spec_numbers(s.core, s.cpu),
                "available": s.available,
                "max_num": s.max_num,
            }
            for s in outcome.specs
            if selects(watch, s)
        ]
    entry["first_poll"] = previous is None
    entry["changes"] = [e.to_public_json() for e in result.events.get(watch.name, [])]
    return entry


def _print_once(report: list[dict[str, Any]]) -> None:
    from .model import Event
    from .render import event_line, spec_shape

    for entry in report:
        print(f"watch {entry['watch']} ({entry['region']}, job type {entry['job_type'] or 'any'})")
        if "error" in entry:
            print(f"  poll failed: {entry['error']}")
        specs = entry.get("specs")
        if specs is not None:
            if not specs:
                print("  no spec in the catalog matches this watch")
            width = max((len(s["key"]) for s in specs), default=10)
            for s in specs:
                state = "available" if s["available"] else "sold out"
                shape = spec_shape(
                    {"gpu_num": s["gpu_num"], "gpu_type": s["gpu_type"], "core": s["vcpus"], "cpu": s["memory_gib"]}
                )
                print(f"  {s['key']:<{width}}  {state:<9}  max {s['max_num']:>3} nodes  {shape}")
        changes = entry["changes"]
        if entry["first_poll"]:
            print("  no stored state yet: this would be the baseline")
        elif changes:
            print("  changes since the stored state:")
            for c in changes:
                ev = Event(c["id"], c["watch"], c["kind"], c["at"], c["spec"], c["data"])
                if c["kind"] in ("degraded", "recovered", "baseline"):
                    print(f"    {c['kind']} [{c['id']}]")
                else:
                    print("  " + event_line(ev).replace("**", "").replace("`", ""))
        elif specs is not None:
            print("  no changes since the stored state")
        print()


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args, resolve_secrets=False)
    from .status import collect_status, print_status

    data = collect_status(config)
    if args.json:
        _print_json(data)
    else:
        print_status(data)
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    config = _load(args, resolve_secrets=False)
    from .durations import parse_duration

    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        print(f"error: --since: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.watch and args.watch not in {w.name for w in config.watches}:
        print(f"note: {args.watch!r} is not in the configuration; showing its stored history", file=sys.stderr)
    import time

    from .render import event_line
    from .store import StateReader

    reader = StateReader.open(config.monitor.state_dir)
    events = []
    if reader is not None:
        try:
            events = reader.events(watch=args.watch, since=time.time() - since)
        finally:
            reader.close()
    if args.json:
        _print_json({"events": [e.to_public_json() for e in events]})
        return EXIT_OK
    if not events:
        print(f"no events in the last {args.since}")
        return EXIT_OK
    for e in events:
        if e.spec_key:
            line = event_line(e).removeprefix("- ").replace("**", "").replace("`", "")
        else:
            line = _health_summary(e)
        print(f"{_fmt_time(e.at)}  {e.watch:<20} {e.kind:<11} {line}")
    return EXIT_OK


def _health_summary(e: Any) -> str:
    from .durations import format_duration

    d = e.data
    if e.kind == "baseline":
        return f"monitoring started: {len(d.get('available', []))} of {d.get('watched', 0)} available [{e.id}]"
    if e.kind == "degraded":
        return f"{d.get('failures')} failed polls: {d.get('reason')} [{e.id}]"
    if e.kind == "recovered":
        return f"after {format_duration(d.get('down_for', 0))} [{e.id}]"
    return f"[{e.id}]"


def cmd_test_notify(args: argparse.Namespace) -> int:
    config = _load(args, check_urls=True)
    names = args.notifier or list(config.notifiers)
    unknown = [n for n in names if n not in config.notifiers]
    if unknown:
        print(
            f"error: no notifier named {', '.join(unknown)} (configured: {', '.join(config.notifiers) or 'none'})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not names:
        print("error: no notifiers are configured", file=sys.stderr)
        return EXIT_CONFIG
    import anyio

    from .logs import setup_logging

    setup_logging("text", "error")
    return anyio.run(_test_notify, config, names)


async def _test_notify(config: Config, names: list[str]) -> int:
    import anyio

    from .errors import DeliveryError
    from .notify import AppriseNotifier
    from .render import render_test_message

    notifier = AppriseNotifier(config.notifiers)
    results: list[tuple[str, str, str | None]] = []

    async def one(name: str, target: Any) -> None:
        message = render_test_message(name)
        try:
            await notifier.send(target.url_key, message.title, message.body)
            results.append((name, target.url_label, None))
        except DeliveryError as exc:
            results.append((name, target.url_label, exc.reason))

    async with anyio.create_task_group() as tg:
        for name in names:
            for target in notifier.targets([name]):
                tg.start_soon(one, name, target)
    failed = 0
    for name in names:
        for n, label, error in sorted(r for r in results if r[0] == name):
            if error is None:
                print(f"{n}: {label}: sent")
            else:
                failed += 1
                print(f"{n}: {label}: FAILED: {error}")
    if failed:
        print(f"{failed} of {len(results)} URL(s) failed", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulator.cli import simulate

    return simulate(args.listen, args.scenario)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(duration=args.duration, keep=args.keep)
