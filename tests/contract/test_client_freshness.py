"""The freshness check catches a contract change that was not regenerated."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_check(contract: Path, client: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "openapi" / "generate.py"),
            "--check",
            "--contract",
            str(contract),
            "--client",
            str(client),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_committed_client_is_fresh(tmp_path: Path) -> None:
    result = run_check(ROOT / "openapi" / "openapi.yaml", ROOT / "generated_client")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_added_optional_field_makes_the_client_stale(tmp_path: Path) -> None:
    contract = yaml.safe_load((ROOT / "openapi" / "openapi.yaml").read_text(encoding="utf-8"))
    contract["components"]["schemas"]["Account"]["properties"]["nickname"] = {"type": "string"}
    changed = tmp_path / "openapi.yaml"
    changed.write_text(yaml.safe_dump(contract, sort_keys=False), encoding="utf-8")
    client = tmp_path / "generated_client"
    shutil.copytree(ROOT / "generated_client", client, ignore=shutil.ignore_patterns("__pycache__"))

    result = run_check(changed, client)

    assert result.returncode == 1
    assert "generated_client is stale: run make generate" in result.stderr
    assert "nickname" in result.stdout
