"""Judging apprise URLs: apprise itself decides, at start-up and in ``check``.

Kept apart from notify.py so ``check`` imports apprise but not anyio.
"""

from __future__ import annotations

from .redact import mask_url


def check_url(url: str) -> str | None:
    """What is wrong with an apprise URL, or None; loads apprise's plugins (slow: once per start)."""
    import apprise

    if apprise.Apprise.instantiate(url) is None:
        return (
            f"apprise does not understand {mask_url(url)}: check the scheme and its required parts "
            "(see the apprise wiki page of this service)"
        )
    return None
