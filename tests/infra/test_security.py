"""Security basics over the repository: safe checkpoint loading, loopback only, no secret committed."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tracked_files() -> list[str]:
    """`git ls-files` of the repository (skips outside a git checkout)."""
    try:
        done = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return done.stdout.splitlines()


def python_sources() -> list[Path]:
    return [REPO / name for name in tracked_files() if name.endswith(".py")]


def unsafe_loads(source: str) -> list[int]:
    """Lines of `torch.load(...)` calls without `weights_only=True`, and of `from torch import load`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "torch":
            lines += [node.lineno for alias in node.names if alias.name == "load"]
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target = node.func
        if target.attr == "load" and isinstance(target.value, ast.Name) and target.value.id == "torch":
            safe = any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                lines.append(node.lineno)
    return lines


def test_the_checker_finds_unsafe_loads() -> None:
    source = (
        "import torch\nfrom torch import load\n"
        "torch.load(f)\ntorch.load(f, weights_only=False)\ntorch.load(f, weights_only=True)\n"
    )
    assert unsafe_loads(source) == [2, 3, 4]


def test_every_torch_load_uses_weights_only() -> None:
    found = {str(p.relative_to(REPO)): unsafe_loads(p.read_text()) for p in python_sources()}
    assert {path: lines for path, lines in found.items() if lines} == {}


def test_nothing_binds_beyond_loopback() -> None:
    everywhere = [p for p in python_sources() if "0.0.0.0" in p.read_text()]
    assert [str(p.relative_to(REPO)) for p in everywhere if "tests" not in p.parts] == []


@pytest.mark.parametrize(
    "path",
    [
        ".airflow/credentials.txt",
        ".airflow/simple_auth_manager_passwords.json.generated",
        ".airflow/airflow.db",
        "mlruns.db",
        "mlruns/0/meta.yaml",
        "lake/checkpoints/gem-fm/ds=2026-01-01/checkpoint.pt",
        ".cache/recbole/ml-100k.inter",
    ],
)
def test_local_state_and_credentials_are_git_ignored(path: str) -> None:
    tracked_files()  # skips outside a git checkout
    done = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
    assert done.returncode == 0, f"{path} is not ignored by .gitignore"


def test_no_credential_or_local_state_is_tracked() -> None:
    def suspicious(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        return (
            name.startswith((".airflow/", "lake/", "mlruns"))
            or any(word in base for word in ("credentials", "passwords"))
            or base == ".env"
            or base.endswith((".pem", ".key", ".db"))
        )

    assert [name for name in tracked_files() if suspicious(name)] == []
