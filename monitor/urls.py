"""Judging apprise URLs: apprise itself decides, at start-up and in ``check``.

Kept apart from notify.py so ``check`` imports apprise but not anyio. A URL
(or configuration file) apprise cannot use is a configuration error at start,
not a delivery that fails for 12 hours.
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


def check_apprise_config(path: str, tag: str | None) -> str | None:
    """What is wrong with an apprise configuration file (and its tag), or None."""
    import apprise

    conf = apprise.AppriseConfig()
    if not conf.add(str(path)):
        return f"apprise cannot read {path} as a configuration file"
    ap = apprise.Apprise()
    ap.add(conf)
    if len(ap) == 0:
        return f"{path} holds no apprise URL apprise understands"
    if tag and not list(ap.find(tag)):
        return f"no URL in {path} has the tag {tag!r}"
    return None
