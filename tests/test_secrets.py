"""No secret in any output: logs at DEBUG, errors, --json output, the state database."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from .conftest import (
    DEMO_AK,
    DEMO_SK,
    MONITOR,
    PROJECT,
    SLACK_URL,
    HttpReceiver,
    SimHandle,
    SmtpSink,
    cli_env,
    wait_for,
)
from .test_process import Process

SECRETS = {
    "ak": DEMO_AK,
    "sk": DEMO_SK,
    "unknown ak": "UNKNOWNACCESSKEY0042",
    "wrong sk": "wrong-secret-key-9f8e7d",
    "password": "demo-password",
    "smtp password": "smtp-pa55word-xyz",
    "webhook path token": "hookTOKEN12345678",
    "slack token": "slacksecrettoken000000001",
    "heartbeat token": "HBtoken1234567",
}


def test_no_configured_secret_reaches_any_output(
    tmp_path: Path, sim: SimHandle, webhook: HttpReceiver, slack: HttpReceiver, smtp: SmtpSink
) -> None:
    token_file = tmp_path / "token"
    token = sim.sim.issue_token(PROJECT)
    token_file.write_text(token)
    secrets = {**SECRETS, "token": token}
    slack.status = 500  # delivery failures log their reasons
    mail_url = (
        f"mailto://bob:{SECRETS['smtp password']}@127.0.0.1:{smtp.port}"
        "?mode=insecure&from=m@example.com&to=o@example.com"
    )
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(
        textwrap.dedent(f"""\
        [monitor]
        interval = "5s"
        jitter = "0%"
        state_dir = "{state}"
        log_format = "json"
        log_level = "debug"
        heartbeat_url = "http://127.0.0.1:{webhook.port}/ping/{SECRETS["heartbeat token"]}"

        [accounts.good]
        access_key = "{DEMO_AK}"
        secret_key = "{DEMO_SK}"
        endpoint = "{sim.url}"
        iam_endpoint = "{sim.url}"

        [accounts.unknown]
        access_key = "{SECRETS["unknown ak"]}"
        secret_key = "{SECRETS["wrong sk"]}"
        endpoint = "{sim.url}"
        iam_endpoint = "{sim.url}"

        [accounts.password]
        auth = "password"
        domain = "demo"
        username = "demo"
        password = "{SECRETS["password"]}"
        endpoint = "{sim.url}"
        iam_endpoint = "{sim.url}"

        [accounts.token]
        auth = "token"
        token = "file:{token_file}"
        endpoint = "{sim.url}"
        iam_endpoint = "{sim.url}"

        [notifiers.all]
        urls = [
            "json://127.0.0.1:{webhook.port}/{SECRETS["webhook path token"]}",
            "{SLACK_URL}",
            "{mail_url}",
        ]
        """)
    )
    for account in ("good", "unknown", "password", "token"):
        config.write_text(
            config.read_text()
            + textwrap.dedent(f"""
            [[watch]]
            name = "{account}"
            account = "{account}"
            region = "cn-north-4"
            project_id = "{PROJECT}"
            job_type = "train"
            """)
        )
    config.chmod(0o600)

    daemon = Process([*MONITOR, "run", "-c", str(config)])
    try:
        wait_for(lambda: len(webhook.requests) >= 4, 30, "messages at the webhook")
        wait_for(lambda: any("delivery to all" in line for line in daemon.collect()), 30, "a failed delivery")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    outputs = {"run": "\n".join(daemon.lines)}
    for args in (
        ["status", "--json"],
        ["status"],
        ["history", "--json"],
        ["history"],
        ["once", "--json"],
        ["check", "--online"],
        ["test-notify"],
    ):
        proc = subprocess.run(
            [*MONITOR, *args, "-c", str(config)], capture_output=True, text=True, env=cli_env(), timeout=60
        )
        outputs[" ".join(args)] = proc.stdout + proc.stderr
    db = b"".join(p.read_bytes() for p in state.iterdir() if p.name.startswith("state.db"))
    assert '"level": "debug"' in outputs["run"]  # the debug logs were really on
    assert "UNKNOWN" not in outputs["check --online"] and "FAILED" in outputs["check --online"]
    for what, value in secrets.items():
        for name, text in outputs.items():
            assert value not in text, f"the {what} appears in the output of {name}"
        assert value.encode() not in db, f"the {what} is in the state database"
