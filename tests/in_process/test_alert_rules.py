"""The alert rules: the block of saga/README.md and the rules file Prometheus loads in docker-compose.yml are the
same rules, they parse, and every metric they name is one that a process Prometheus scrapes exports."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from saga.directory import ServiceDirectory
from saga.logs import MemorySagaLog
from saga.service import TransfersSettings, create_transfers_app
from saga.telemetry.metrics import SagaMetrics
from server.app import create_app
from server.process import REPO_ROOT
from server.settings import Settings
from tests.support.inprocess import asgi_client

RULES_FILE = REPO_ROOT / "instances" / "compose" / "alert-rules.yml"
#: Where the rules are shown, each threshold with why it is what it is.
RULES_DOCUMENT = REPO_ROOT / "saga" / "README.md"
METRIC_NAME = re.compile(r"\b((?:saga|transfers_api|accounts)_[a-z_]+)\b")
#: The series a metric family of each type adds beside its own name.
SERIES_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}
#: What Prometheus takes in a rule group and in an alerting rule.
GROUP_KEYS = {"name", "interval", "limit", "rules"}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")


def documented_block() -> str:
    document = RULES_DOCUMENT.read_text(encoding="utf-8")
    section = document.split("\n### Alerts\n", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def groups_of(text: str) -> list[dict[str, Any]]:
    groups = yaml.safe_load(text)["groups"]
    assert isinstance(groups, list)
    return groups


def rules_of(text: str) -> list[dict[str, Any]]:
    return [rule for group in groups_of(text) for rule in group["rules"]]


def rules_file() -> str:
    return RULES_FILE.read_text(encoding="utf-8")


SOURCES: dict[str, Callable[[], str]] = {"saga/README.md": documented_block, "rules file": rules_file}


def series_names(exposition: str) -> set[str]:
    """Every series name a Prometheus scrape of ``exposition`` can hold, a labelled family with no sample yet too."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names |= {name, *(name + suffix for suffix in SERIES_SUFFIXES.get(kind, ()))}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def exported_names() -> set[str]:
    """What the transfers service, an accounts service and a worker (``SagaMetrics``) export."""

    async def scrape() -> list[str]:
        log = MemorySagaLog(exclusive=True)
        registry = CollectorRegistry(auto_describe=True)
        transfers = create_transfers_app(TransfersSettings(directory=ServiceDirectory({})), log, registry=registry)
        async with asgi_client(transfers) as client:
            transfers_text = (await client.get("/metrics")).text
        async with asgi_client(create_app(Settings())) as client:
            accounts_text = (await client.get("/metrics")).text
        return [transfers_text, accounts_text]

    texts = [*asyncio.run(scrape()), generate_latest(SagaMetrics().registry).decode()]
    return {name for text in texts for name in series_names(text)}


def test_the_rules_file_holds_the_documented_block_as_it_is_written() -> None:
    block = documented_block()
    assert block.strip()
    assert block in RULES_FILE.read_text(encoding="utf-8")
    assert groups_of(RULES_FILE.read_text(encoding="utf-8")) == groups_of(block)


@pytest.mark.parametrize("source", SOURCES)
def test_every_rule_has_an_expression_a_severity_and_a_runbook(source: str) -> None:
    rules = rules_of(SOURCES[source]())
    assert len(rules) >= 5
    for rule in rules:
        assert rule["alert"]
        assert rule["expr"]
        assert rule["labels"]["severity"] in {"page", "warning", "info"}
        assert "/ui/" in rule["annotations"]["runbook"] or "python -m saga" in rule["annotations"]["runbook"]


@pytest.mark.parametrize("source", SOURCES)
def test_the_rules_are_in_prometheus_rule_file_form(source: str) -> None:
    document = yaml.safe_load(SOURCES[source]())
    assert set(document) == {"groups"}
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names))
    for group in document["groups"]:
        assert set(group) <= GROUP_KEYS, group["name"]
        for rule in group["rules"]:
            assert set(rule) <= RULE_KEYS, rule["alert"]
            assert isinstance(rule["expr"], str), rule["alert"]
            assert "for" not in rule or DURATION.fullmatch(rule["for"]), rule["alert"]
            assert all(isinstance(value, str) for value in rule["labels"].values()), rule["alert"]


@pytest.mark.parametrize("source", SOURCES)
def test_every_metric_a_rule_names_is_exported_by_a_process_prometheus_scrapes(source: str) -> None:
    exported = exported_names()
    named = {name for rule in rules_of(SOURCES[source]()) for name in METRIC_NAME.findall(rule["expr"])}
    assert named, "the rules name metrics"
    assert named <= exported, f"named but not exported: {sorted(named - exported)}"


def test_a_metric_that_no_process_exports_is_caught() -> None:
    exported = exported_names()
    assert {"saga_compensating_stuck", "accounts_store_errors_total", "saga_claims_total"} <= exported
    assert "saga_compensating_stuck_total" not in exported
    assert "accounts_store_errors" not in exported
