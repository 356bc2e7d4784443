"""The layer rules of docs/architecture.md, enforced on the source tree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IO_MODULES = {
    "asyncio",
    "socket",
    "serial",
    "serial_asyncio",
    "serial_asyncio_fast",
    "aiomqtt",
    "uvloop",
    "aiohttp",
    "aiosqlite",
    "selectors",
    "threading",
    "subprocess",
}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def sources(package: str) -> list[Path]:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    return files


@pytest.mark.parametrize("path", sources("protocols"), ids=lambda p: str(p.relative_to(REPO)))
def test_protocols_are_sans_io(path: Path) -> None:
    forbidden = imported_roots(path) & (IO_MODULES | {"hesd", "adapters"})
    assert not forbidden, f"{path.relative_to(REPO)} imports {sorted(forbidden)}"


@pytest.mark.parametrize("path", sources("adapters"), ids=lambda p: str(p.relative_to(REPO)))
def test_adapters_do_no_io_and_know_no_daemon(path: Path) -> None:
    forbidden = imported_roots(path) & (IO_MODULES | {"hesd"})
    assert not forbidden, f"{path.relative_to(REPO)} imports {sorted(forbidden)}"


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom socket import socket\n")
    assert imported_roots(bad) & IO_MODULES == {"asyncio", "socket"}
