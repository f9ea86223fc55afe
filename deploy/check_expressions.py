"""Evaluate every dashboard query and alert expression against a real Prometheus.

Starts the dev stack (Tansu, redis-server), a worker on it, and Debian's ``prometheus``
scraping the worker every second with ``deploy/prometheus/alerts.yml`` loaded; sends simulated
traffic (some of it malformed) through the worker; then asks Prometheus's HTTP API for each
query of ``deploy/grafana/dashboards/lifecycle-triggers.json`` (Grafana variables filled in:
job lifecycle-triggers, every instance, $__rate_interval 1m) and each alert rule's expression,
and prints what each returned. Exits 1 if any expression fails to evaluate, or if a dashboard
query that must have data under traffic returns none. Run by ``make check-dashboards``.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from streams.tools.devstack import DevStack, dev_environment, free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "lifecycle-triggers.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
JOB = "lifecycle-triggers"
TRAFFIC_SECONDS = 75


def concrete(expr: str) -> str:
    """A Grafana query with its variables filled in."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
    expr = expr.replace("${job}", JOB).replace("$job", JOB)
    return re.sub(r"\$\{[^}]*\}|\$\w+", ".*", expr)


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for panel in dash["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            for target in p.get("targets", []):
                out.append((f"panel {p['title']!r} {target['refId']}", target["expr"]))
    return out


def alert_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [(f"alert {r['alert']}", r["expr"]) for g in groups for r in g["rules"]]


def query(port: int, expr: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - local server
            body: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
    return body


def describe(body: dict[str, Any]) -> str:
    if body.get("status") != "success":
        return f"ERROR {body.get('errorType')}: {body.get('error')}"
    result = body["data"]["result"]
    if not result:
        return "no series (empty)"
    shown = []
    for series in result[:4]:
        labels = ",".join(
            f"{k}={v}" for k, v in sorted(series["metric"].items()) if k not in {"job"}
        )
        value = float(series["value"][1])
        shown.append(f"{{{labels}}} {value:.4g}")
    more = f" (+{len(result) - 4} more)" if len(result) > 4 else ""
    return f"{len(result)} series: " + "; ".join(shown) + more


def main() -> int:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("prometheus not found: make system-deps installs Debian's package", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="check-expressions-"))
    stack = DevStack(work / "stack")
    stack.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        metrics_port, prom_port = free_port(), free_port()
        env = dev_environment(stack)
        env.update(
            {
                "CLOCK": "event",
                "STATE_STORE": "memory",
                "METRICS_PORT": str(metrics_port),
                "TOPIC_PARTITIONS": "4",
                "APP_ID": "check-expressions",
                "LEDGER_NAMESPACE": "check-expressions",
            }
        )
        with open(work / "worker.log", "wb") as log:
            procs.append(
                subprocess.Popen(  # noqa: S603 - our own interpreter
                    [sys.executable, "-m", "streams", "worker"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        config = work / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(ALERTS)],
                    "scrape_configs": [
                        {
                            "job_name": JOB,
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                        }
                    ],
                }
            )
        )
        procs.append(
            subprocess.Popen(  # noqa: S603 - our own prometheus and interpreter
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={work / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(  # noqa: S310 - local worker
                    f"http://127.0.0.1:{metrics_port}/ready", timeout=2
                ) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            print((work / "worker.log").read_text()[-3000:], file=sys.stderr)
            return 1
        print(f"worker ready; traffic for {TRAFFIC_SECONDS} s ...", flush=True)
        started = time.monotonic()
        round_ = 0
        while time.monotonic() - started < TRAFFIC_SECONDS:
            subprocess.run(  # noqa: S603 - our own interpreter
                [
                    sys.executable,
                    "-m",
                    "streams",
                    "simulate",
                    "--customers",
                    "150",
                    "--days",
                    "120",
                    "--seed",
                    str(round_ + 1),
                    "--malformed-rate",
                    "0.02",
                    "--partitions",
                    "4",
                    "--bootstrap-servers",
                    stack.bootstrap_servers,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                check=True,
            )
            round_ += 1
            time.sleep(5)
        failed = 0
        empty_dashboard = 0
        for section, exprs in (
            ("dashboard", dashboard_queries()),
            ("alerts", alert_expressions()),
        ):
            print(f"\n== {section}")
            for where, expr in exprs:
                text = concrete(expr) if section == "dashboard" else expr
                body = query(prom_port, text)
                described = describe(body)
                failed += described.startswith("ERROR")
                if section == "dashboard" and described.startswith("no series"):
                    empty_dashboard += 1
                print(f"{where}: {described}")
                print(f"    {' '.join(text.split())}")
        print(
            f"\n{failed} expressions failed to evaluate; {empty_dashboard} dashboard queries "
            "returned no series"
        )
        return 1 if failed else 0
    finally:
        for proc in reversed(procs):
            stop_process(proc, signal.SIGTERM, 30)
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
