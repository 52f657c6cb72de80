"""The README's alert rules: they parse, and every metric they name is one the transfers service exports."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from saga.directory import ServiceDirectory
from saga.logs import MemorySagaLog
from saga.service import TransfersSettings, create_transfers_app
from server.process import REPO_ROOT
from tests.support.inprocess import asgi_client

METRIC_NAME = re.compile(r"\b(saga_[a-z_]+|transfers_api_[a-z_]+)\b")


def readme_rules() -> list[dict[str, Any]]:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Alerts", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    groups = yaml.safe_load(block)["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exported_names() -> set[str]:
    async def scrape() -> str:
        log = MemorySagaLog(exclusive=True)
        registry = CollectorRegistry(auto_describe=True)
        app = create_transfers_app(TransfersSettings(directory=ServiceDirectory({})), log, registry=registry)
        async with asgi_client(app) as client:
            return (await client.get("/metrics")).text

    text = asyncio.run(scrape())
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_rule_has_an_expression_a_severity_and_a_runbook() -> None:
    rules = readme_rules()
    assert len(rules) >= 5
    for rule in rules:
        assert rule["alert"]
        assert rule["expr"]
        assert rule["labels"]["severity"] in {"page", "warning", "info"}
        assert "/ui/" in rule["annotations"]["runbook"] or "python -m saga" in rule["annotations"]["runbook"]


def test_every_metric_a_rule_names_is_exported_by_the_transfers_service() -> None:
    exported = exported_names()
    named = {name for rule in readme_rules() for name in METRIC_NAME.findall(rule["expr"])}
    assert named, "the rules name metrics"
    assert named <= exported, f"named but not exported: {sorted(named - exported)}"
