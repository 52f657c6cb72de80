"""Generate the typed clients in generated_client/ from the contracts, or check that they are fresh.

Each contract gets a package of its own under generated_client/, named after
the service it calls:

    openapi/openapi.yaml   -> generated_client/accounts/   (the accounts service)
    openapi/transfers.yaml -> generated_client/transfers/  (the transfers service)

python openapi/generate.py            # rewrite both clients
python openapi/generate.py --check    # fail if either client is stale
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "openapi" / "client-config.yaml"
CLIENTS_FOLDER = ROOT / "generated_client"
#: Package name -> the contract it is generated from.
CLIENTS = {
    "accounts": ROOT / "openapi" / "openapi.yaml",
    "transfers": ROOT / "openapi" / "transfers.yaml",
}
PACKAGE_DOCSTRING = '''"""Typed clients made from the contracts in openapi/ by `make generate`; never edited by hand.

- generated_client.accounts: the accounts service (openapi/openapi.yaml)
- generated_client.transfers: the transfers service (openapi/transfers.yaml)
"""
'''
STALE_MESSAGE = "generated_client is stale: run make generate"


def generate(contract: Path, output: Path) -> None:
    """Write the client package for ``contract`` into ``output`` (replaced whole), named after its folder."""
    bin_dir = Path(sys.executable).parent
    generator = bin_dir / "openapi-python-client"
    with tempfile.TemporaryDirectory(prefix="generate-client-") as scratch:
        config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
        config["project_name_override"] = f"{output.name}-client"
        config["package_name_override"] = output.name
        config_path = Path(scratch) / "config.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        target = Path(scratch) / output.name
        env_path = f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}"
        subprocess.run(
            [
                str(generator),
                "generate",
                "--path",
                str(contract),
                "--config",
                str(config_path),
                "--meta",
                "none",
                "--output-path",
                str(target),
            ],
            check=True,
            cwd=scratch,
            env={"PATH": env_path},
            stdout=subprocess.DEVNULL,
        )
        if output.exists():
            shutil.rmtree(output)
        shutil.copytree(target, output, ignore=shutil.ignore_patterns("__pycache__", ".ruff_cache"))


def generate_all(folder: Path) -> None:
    """Write every client of CLIENTS into ``folder``, and the package that holds them."""
    folder.mkdir(exist_ok=True)
    (folder / "__init__.py").write_text(PACKAGE_DOCSTRING, encoding="utf-8")
    for name, contract in CLIENTS.items():
        generate(contract, folder / name)


def differences(expected: Path, actual: Path) -> list[str]:
    """Unified diffs of every file that differs between two client folders."""

    def files(folder: Path) -> set[Path]:
        if not folder.exists():
            return set()
        return {
            path.relative_to(folder)
            for path in folder.rglob("*")
            if path.is_file() and not {"__pycache__", ".ruff_cache"} & set(path.parts)
        }

    diffs = []
    for relative in sorted(files(expected) | files(actual)):
        old = actual / relative
        new = expected / relative
        old_lines = old.read_text(encoding="utf-8").splitlines(keepends=True) if old.exists() else []
        new_lines = new.read_text(encoding="utf-8").splitlines(keepends=True) if new.exists() else []
        if old_lines != new_lines:
            diffs.append(
                "".join(difflib.unified_diff(old_lines, new_lines, f"committed/{relative}", f"regenerated/{relative}"))
            )
    return diffs


def check(contract: Path | None, client: Path) -> list[str]:
    """Diffs between ``client`` and a fresh generation: of one contract's package, or of the whole folder."""
    with tempfile.TemporaryDirectory(prefix="check-client-") as scratch:
        fresh = Path(scratch) / client.name
        if contract is None:
            generate_all(fresh)
        else:
            generate(contract, fresh)
        return differences(fresh, client)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--contract", type=Path, help="one contract only; --client is then its package's folder")
    parser.add_argument("--client", type=Path, help="the folder to write or check (generated_client/)")
    args = parser.parse_args(argv)
    if args.contract is not None and args.client is None:
        parser.error("--contract needs --client, the folder of its package")
    client = args.client or CLIENTS_FOLDER
    if not args.check:
        if args.contract is None:
            generate_all(client)
        else:
            generate(args.contract, client)
        print(f"generated {client}")
        return 0
    diffs = check(args.contract, client)
    if diffs:
        sys.stdout.write("".join(diffs)[:20_000])
        print(STALE_MESSAGE, file=sys.stderr)
        return 1
    print(f"{client} is fresh")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
