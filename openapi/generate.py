"""Generate generated_client/ from the contract, or check that it is fresh.

python openapi/generate.py            # rewrite generated_client/
python openapi/generate.py --check    # fail if generated_client/ is stale
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "openapi" / "openapi.yaml"
CONFIG = ROOT / "openapi" / "client-config.yaml"
CLIENT = ROOT / "generated_client"
STALE_MESSAGE = "generated_client is stale: run make generate"


def generate(contract: Path, output: Path) -> None:
    """Write the client package for ``contract`` into ``output`` (replaced whole)."""
    bin_dir = Path(sys.executable).parent
    generator = bin_dir / "openapi-python-client"
    with tempfile.TemporaryDirectory(prefix="generate-client-") as scratch:
        target = Path(scratch) / "generated_client"
        env_path = f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}"
        subprocess.run(
            [
                str(generator),
                "generate",
                "--path",
                str(contract),
                "--config",
                str(CONFIG),
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


def check(contract: Path, client: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="check-client-") as scratch:
        fresh = Path(scratch) / "generated_client"
        generate(contract, fresh)
        return differences(fresh, client)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--contract", type=Path, default=CONTRACT)
    parser.add_argument("--client", type=Path, default=CLIENT)
    args = parser.parse_args(argv)
    if not args.check:
        generate(args.contract, args.client)
        print(f"generated {args.client} from {args.contract}")
        return 0
    diffs = check(args.contract, args.client)
    if diffs:
        sys.stdout.write("".join(diffs)[:20_000])
        print(STALE_MESSAGE, file=sys.stderr)
        return 1
    print(f"{args.client} is fresh")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
