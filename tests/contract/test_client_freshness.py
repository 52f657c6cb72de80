"""The freshness check catches a contract change that was not regenerated."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_check(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "openapi" / "generate.py"), "--check", *arguments],
        capture_output=True,
        text=True,
        check=False,
    )


def test_both_committed_clients_are_fresh() -> None:
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("contract", "package", "schema"),
    [("openapi.yaml", "accounts", "Account"), ("transfers.yaml", "transfers", "Transfer")],
)
def test_an_added_optional_field_makes_its_client_stale(
    tmp_path: Path, contract: str, package: str, schema: str
) -> None:
    document = yaml.safe_load((ROOT / "openapi" / contract).read_text(encoding="utf-8"))
    document["components"]["schemas"][schema]["properties"]["nickname"] = {"type": "string"}
    changed = tmp_path / contract
    changed.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    client = tmp_path / package
    shutil.copytree(ROOT / "generated_client" / package, client, ignore=shutil.ignore_patterns("__pycache__"))

    result = run_check("--contract", str(changed), "--client", str(client))

    assert result.returncode == 1
    assert "generated_client is stale: run make generate" in result.stderr
    assert "nickname" in result.stdout


def test_a_client_edited_by_hand_is_stale(tmp_path: Path) -> None:
    folder = tmp_path / "generated_client"
    shutil.copytree(ROOT / "generated_client", folder, ignore=shutil.ignore_patterns("__pycache__"))
    edited = folder / "transfers" / "models" / "transfer.py"
    edited.write_text(edited.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")

    result = run_check("--client", str(folder))

    assert result.returncode == 1
    assert "transfers/models/transfer.py" in result.stdout
