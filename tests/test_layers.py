"""The apps' import layers (issue 10, "One rule, one place"): `lint-imports` must pass.

The contract lives in pyproject.toml ([tool.importlinter]); `make test` runs it too. A broken
contract fails pytest, and the second test proves the contract as configured does catch an
import that goes up the layers.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_apps_keep_their_import_layers():
    result = _lint(ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout


def _contract_without_exceptions() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    for contract in config["contracts"]:
        contract.pop("ignore_imports", None)
    return config


def _toml(config: dict) -> str:
    lines = ["[tool.importlinter]"]
    lines.append(f"root_packages = {config['root_packages']!r}".replace("'", '"'))
    for contract in config["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        for key, value in contract.items():
            lines.append(f"{key} = {value!r}".replace("'", '"'))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("importer", "imported", "broken"),
    [
        ("patients/models.py", "monitoring", True),  # up the layers
        ("audit/chain.py", "compliance", True),
        ("followups/models.py", "monitoring", True),
        ("monitoring/services.py", "followups", False),  # down the layers
        ("compliance/selectors.py", "audit", False),
    ],
)
def test_the_configured_layers_forbid_importing_upwards(tmp_path, importer, imported, broken):
    """A throwaway tree with the apps' names and one import, checked with the real layers."""
    config = _contract_without_exceptions()
    for package in config["root_packages"]:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / importer).write_text(f"import {imported}\n")
    (tmp_path / "pyproject.toml").write_text(_toml(config))

    result = _lint(tmp_path)

    assert (result.returncode != 0) is broken, result.stdout + result.stderr
    if broken:
        top = importer.split("/")[0]
        assert f"{top} is not allowed to import {imported}" in result.stdout
