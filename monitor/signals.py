"""Signal handling before the daemon's own: a stop is clean, a reload is kept for later.

The default actions of SIGTERM and SIGHUP kill a process, and Python takes a
moment to start; ``install_early_handlers`` runs first thing in ``run`` so
neither arrives to a process that cannot handle it yet.
"""

from __future__ import annotations

import signal
from typing import Any, NoReturn

_reload_requested = False


def _exit_cleanly(signum: int, frame: Any) -> NoReturn:
    raise SystemExit(0)


def _note_reload(signum: int, frame: Any) -> None:
    global _reload_requested
    _reload_requested = True


def install_early_handlers() -> None:
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    signal.signal(signal.SIGHUP, _note_reload)


def early_reload_requested() -> bool:
    """True once if a SIGHUP came before the daemon listened for signals."""
    global _reload_requested
    requested, _reload_requested = _reload_requested, False
    return requested
