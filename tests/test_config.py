"""The configuration: every key of SPEC section 4, every problem located by key path."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from monitor import redact
from monitor.config import load_config, parse_config
from monitor.errors import ConfigError

from .conftest import MONITOR, cli_env

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = """\
[accounts.main]
access_key = "AKEXAMPLE0001"
secret_key = "SKEXAMPLE0001"

[notifiers.slack]
urls = ["slack://T0000AAAA/B0000BBBB/cccccccccccccccccccccccc"]

[[watch]]
name = "w"
region = "cn-north-4"
"""


def load_text(tmp_path: Path, text: str) -> object:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text))
    path.chmod(0o600)
    return load_config(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def test_the_example_configuration_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HW_ACCESS_KEY", "AKEXAMPLE")
    monkeypatch.setenv("HW_SECRET_KEY", "SKEXAMPLE")
    config = load_config(ROOT / "config.example.toml")
    names = [w.name for w in config.watches]
    assert names == ["v100-train-bj4", "ascend-train-shanghai"]
    first = config.watches[0]
    assert first.gpu_types == ("v100", "a100") and first.interval == 30 and first.remind_every == 1800
    assert config.accounts["main"].secret_key is not None
    assert config.accounts["main"].secret_key.reveal() == "SKEXAMPLE"


def test_the_example_documents_every_key() -> None:
    """Each key the parser accepts appears in config.example.toml (a comment counts)."""
    text = (ROOT / "config.example.toml").read_text()
    keys = [
        "interval",
        "jitter",
        "timeout",
        "max_concurrency",
        "state_dir",
        "failure_alert_after",
        "retention",
        "http_listen",
        "log_format",
        "log_level",
        "heartbeat_url",
        "auth",
        "access_key",
        "secret_key",
        "security_token",
        "domain",
        "username",
        "password",
        "token",
        "endpoint",
        "iam_endpoint",
        "ca_bundle",
        "urls",
        "config",
        "tag",
        "quiet_hours",
        "name",
        "account",
        "region",
        "project_id",
        "job_type",
        "engine_id",
        "project_type",
        "gpu_types",
        "spec_codes",
        "min_gpu_num",
        "events",
        "notify",
        "confirm",
        "remind_every",
    ]
    for key in keys:
        assert f"{key} =" in text, key


def test_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL)
    m = config.monitor  # type: ignore[attr-defined]
    assert (m.interval, m.jitter, m.timeout, m.max_concurrency, m.failure_alert_after) == (60, 0.1, 15, 8, 3)
    w = config.watches[0]  # type: ignore[attr-defined]
    assert w.account == "main" and w.min_gpu_num == 1 and w.confirm == 1 and w.notify == ("slack",)
    assert w.events == ("available", "unavailable", "max_num", "added", "removed")


BAD = [
    (
        "gpu_types not a list",
        '[[watch]]\nname = "x"\nregion = "r"\ngpu_types = "v100"',
        "watch[1].gpu_types: expected a list of strings",
    ),
    (
        "unknown watch key",
        '[[watch]]\nname = "x"\nregion = "r"\ngpu_type = ["v100"]',
        'watch[1].gpu_type: unknown key; did you mean "gpu_types"?',
    ),
    ("unknown monitor key", '[monitor]\nintervall = "5s"', 'monitor.intervall: unknown key; did you mean "interval"?'),
    ("interval too short", '[monitor]\ninterval = "1s"', "monitor.interval: must be at least 5s"),
    ("interval not a string", "[monitor]\ninterval = 60", "monitor.interval: expected a duration string"),
    ("bad duration", '[monitor]\ninterval = "soon"', "monitor.interval: 'soon' is not a duration"),
    ("bad jitter", '[monitor]\njitter = "90%"', "monitor.jitter: must be between 0% and 50%"),
    ("bad log format", '[monitor]\nlog_format = "xml"', "monitor.log_format: expected one of"),
    ("bad listen", '[monitor]\nhttp_listen = "9464"', 'monitor.http_listen: expected "HOST:PORT"'),
    (
        "bad job type",
        '[[watch]]\nname = "x"\nregion = "r"\njob_type = "training"',
        "watch[1].job_type: expected one of",
    ),
    ("bad event", '[[watch]]\nname = "x"\nregion = "r"\nevents = ["avail"]', "watch[1].events: unknown event 'avail'"),
    (
        "unknown notifier",
        '[[watch]]\nname = "x"\nregion = "r"\nnotify = ["pager"]',
        "watch[1].notify: no notifier named 'pager'",
    ),
    (
        "unknown account",
        '[[watch]]\nname = "x"\nregion = "r"\naccount = "other"',
        "watch[1].account: no account named 'other'",
    ),
    ("duplicate name", '[[watch]]\nname = "w"\nregion = "r"', "watch[1].name: 'w' is used by another watch"),
    ("confirm zero", '[[watch]]\nname = "x"\nregion = "r"\nconfirm = 0', "watch[1].confirm: must be at least 1"),
    (
        "project type",
        '[[watch]]\nname = "x"\nregion = "r"\nproject_type = 7',
        "watch[1].project_type: must be at most 3",
    ),
    (
        "min_gpu_num bool",
        '[[watch]]\nname = "x"\nregion = "r"\nmin_gpu_num = true',
        "watch[1].min_gpu_num: expected an integer",
    ),
    ("region", '[[watch]]\nname = "x"\nregion = "CN North"', "watch[1].region: expected a region name"),
    ("missing region", '[[watch]]\nname = "x"', "watch[1].region: missing (required)"),
    ("bad url", '[notifiers.bad]\nurls = ["hooks.slack.com"]', "notifiers.bad.urls[0]: expected an apprise URL"),
    ("no urls", "[notifiers.bad]\nurls = []", "notifiers.bad.urls: is empty"),
    (
        "quiet hours",
        '[notifiers.q]\nurls = ["json://localhost"]\nquiet_hours = "22-7"',
        'notifiers.q.quiet_hours: expected "HH:MM-HH:MM"',
    ),
    (
        "env not set",
        '[accounts.b]\naccess_key = "env:MM_TEST_UNSET_VAR"\nsecret_key = "x"',
        "accounts.b.access_key: environment variable MM_TEST_UNSET_VAR is not set",
    ),
    (
        "missing file",
        '[accounts.b]\naccess_key = "file:/nonexistent/ak"\nsecret_key = "x"',
        "accounts.b.access_key: /nonexistent/ak does not exist",
    ),
    (
        "cred outside systemd",
        '[accounts.b]\naccess_key = "a"\nsecret_key = "cred:hw_sk"',
        "accounts.b.secret_key: cred:hw_sk needs systemd's $CREDENTIALS_DIRECTORY",
    ),
    ("bad auth", '[accounts.b]\nauth = "oauth"', "accounts.b.auth: expected one of 'aksk', 'password', 'token'"),
    (
        "password keys under aksk",
        '[accounts.b]\naccess_key = "a"\nsecret_key = "b"\nusername = "u"',
        "accounts.b.username: unknown key",
    ),
    (
        "password mode needs password",
        '[accounts.b]\nauth = "password"\ndomain = "d"\nusername = "u"',
        "accounts.b.password: missing (required)",
    ),
    (
        "endpoint",
        '[accounts.b]\naccess_key = "a"\nsecret_key = "b"\nendpoint = "modelarts.example.com"',
        "accounts.b.endpoint: expected an https:// URL",
    ),
    ("top-level typo", '[watches]\nname = "x"', 'watches: unknown key; did you mean "watch"?'),
]


@pytest.mark.parametrize(("extra", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_each_problem_names_its_key_path(
    tmp_path: Path, extra: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    found = problems(tmp_path, MINIMAL + "\n" + extra + "\n")
    assert any(p.startswith(expected) for p in found), found


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    found = problems(tmp_path, '[monitor]\ninterval = 1\ntimeout = "x"\n[[watch]]\nname = 3\n')
    assert len(found) >= 4  # interval, timeout, accounts missing, name, region


def test_a_watch_needs_an_account_when_there_are_several(tmp_path: Path) -> None:
    text = MINIMAL + '[accounts.second]\naccess_key = "a2a2"\nsecret_key = "b2b2"\n'
    assert any(p.startswith("watch[0].account: missing") for p in problems(tmp_path, text))


def test_secret_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sk").write_text("secret-from-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hw_ak").write_text("ak-from-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("MM_TOKEN", "token-from-env")
    monkeypatch.setenv("MM_URL", "json://localhost/hook")
    config = load_text(
        tmp_path,
        f"""\
        [accounts.main]
        access_key = "cred:hw_ak"
        secret_key = "file:{tmp_path / "sk"}"
        security_token = "env:MM_TOKEN"
        [notifiers.n]
        urls = ["env:MM_URL"]
        [[watch]]
        name = "w"
        region = "cn-north-4"
        """,
    )
    acc = config.accounts["main"]  # type: ignore[attr-defined]
    assert acc.access_key.reveal() == "ak-from-credential"
    assert acc.secret_key.reveal() == "secret-from-file"
    assert acc.security_token.reveal() == "token-from-env"
    assert "secret-from-file" not in repr(acc)
    assert config.notifiers["n"].urls[0].reveal() == "json://localhost/hook"  # type: ignore[attr-defined]


def test_secrets_are_registered_for_redaction(tmp_path: Path) -> None:
    load_text(
        tmp_path, MINIMAL.replace('urls = ["slack://', 'urls = ["mailtos://bob:hunter22@smtp.example.com", "slack://')
    )
    text = "key SKEXAMPLE0001 and pass hunter22 and token cccccccccccccccccccccccc"
    assert redact.redact(text) == "key *** and pass *** and token ***"


def test_a_literal_secret_in_a_readable_file_draws_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL)
    path.chmod(0o644)
    config = load_config(path)
    assert any("other users can read it" in w for w in config.warnings)
    path.chmod(0o600)
    assert load_config(path).warnings == ()


def test_watches_sharing_a_query_are_grouped() -> None:
    config = parse_config(
        {
            "accounts": {"a": {"access_key": "k123", "secret_key": "s123"}},
            "notifiers": {},
            "watch": [
                {"name": "v100", "region": "cn-north-4", "job_type": "train", "gpu_types": ["v100"]},
                {"name": "a100", "region": "cn-north-4", "job_type": "train", "gpu_types": ["a100"], "interval": "30s"},
                {"name": "infer", "region": "cn-north-4", "job_type": "inference"},
            ],
        }
    )
    queries = config.queries()
    assert [[w.name for w in ws] for ws in queries.values()] == [["v100", "a100"], ["infer"]]
    first = next(iter(queries))
    assert config.query_interval(first) == 30


def test_not_toml(tmp_path: Path) -> None:
    assert any("not valid TOML" in p for p in problems(tmp_path, "[monitor\n"))


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["check", "--config", "CONFIG"], 0),
        (["check", "--config", "/nonexistent.toml"], 78),
        (["check", "--config", "BAD"], 78),
        (["check", "--bogus"], 64),
        (["frobnicate"], 64),
        ([], 64),
        (["history", "--config", "CONFIG", "--since", "yesterday"], 64),
    ],
)
def test_exit_statuses(tmp_path: Path, args: list[str], status: int) -> None:
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL + f'[monitor]\nstate_dir = "{tmp_path / "state"}"\n')
    good.chmod(0o600)
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + '[[watch]]\nname = "x"\nregion = "r"\ngpu_types = "v100"\n')
    args = [str(good) if a == "CONFIG" else str(bad) if a == "BAD" else a for a in args]
    proc = subprocess.run([*MONITOR, *args], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    if status == 78 and "BAD" in str(args):
        assert "watch[1].gpu_types: expected a list of strings" in proc.stderr


def test_the_config_path_comes_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + f'[monitor]\nstate_dir = "{tmp_path}"\n')
    path.chmod(0o600)
    proc = subprocess.run(
        [*MONITOR, "check"], capture_output=True, text=True, timeout=60, env=cli_env(MODELARTS_MONITOR_CONFIG=str(path))
    )
    assert proc.returncode == 0, proc.stderr
    assert str(path) in proc.stdout


def test_check_rejects_a_url_apprise_cannot_use(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL.replace("slack://T0000AAAA/B0000BBBB/cccccccccccccccccccccccc", "nosuchscheme://x"))
    path.chmod(0o600)
    proc = subprocess.run(
        [*MONITOR, "check", "-c", str(path)], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert proc.returncode == 78
    assert "notifiers.slack.urls[0]: apprise does not understand" in proc.stderr


def test_environment_is_clean() -> None:
    assert "MM_TEST_UNSET_VAR" not in os.environ


def test_every_problem_comes_in_one_round_even_apprise_ones(tmp_path: Path) -> None:
    from monitor.urls import check_url

    path = tmp_path / "c.toml"
    path.write_text(
        MINIMAL.replace("slack://T0000AAAA/B0000BBBB/cccccccccccccccccccccccc", "nosuchscheme://x")
        + '[[watch]]\nname = "w"\nregion = "r"\ngpu_types = "v100"\n'
    )
    path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        load_config(path, url_checker=check_url)
    found = [f"{p.path}: {p.message}" for p in info.value.problems]
    assert any(p.startswith("notifiers.slack.urls[0]: apprise does not understand") for p in found), found
    assert any(p.startswith("watch[1].name: 'w' is used by another watch") for p in found), found
    assert any(p.startswith("watch[1].gpu_types") for p in found), found


def test_read_only_commands_need_no_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "c.toml"
    path.write_text(
        MINIMAL.replace('secret_key = "SKEXAMPLE0001"', 'secret_key = "cred:hw_secret_key"')
        + f'[monitor]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    path.chmod(0o600)
    for command in (["status"], ["history"]):
        proc = subprocess.run(
            [*MONITOR, *command, "-c", str(path)], capture_output=True, text=True, env=cli_env(), timeout=60
        )
        assert proc.returncode == 0, proc.stderr
    check = subprocess.run(
        [*MONITOR, "check", "-c", str(path)], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert check.returncode == 78 and "CREDENTIALS_DIRECTORY" in check.stderr


def test_a_url_without_secrets_draws_no_literal_secret_warning(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        MINIMAL.replace("slack://T0000AAAA/B0000BBBB/cccccccccccccccccccccccc", "json://127.0.0.1:9/hook").replace(
            'access_key = "AKEXAMPLE0001"\nsecret_key = "SKEXAMPLE0001"',
            'access_key = "env:HOME"\nsecret_key = "env:HOME"',
        )
    )
    path.chmod(0o644)
    assert load_config(path).warnings == ()


def test_config_may_come_before_the_command(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + f'[monitor]\nstate_dir = "{tmp_path}"\n')
    path.chmod(0o600)
    proc = subprocess.run(
        [*MONITOR, "--config", str(path), "check"], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
