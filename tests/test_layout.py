"""The house rules that keep the product apart from its instruments.

The product (``fastaccept`` and ``fastaccept._core``) never imports or links
the bench's instruments (``fastaccept.bench``: the load generator, the
reference servers, the c-inline server, the runner). Checked on the
installed package three ways: no product module's source imports them, a
process that uses the product (and the ``serve`` verb's parser) never loads
them, and the product's extension has none of their C in it.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

import fastaccept
from fa_testutil import run_child_json

PACKAGE = Path(fastaccept.__file__).parent
PRODUCT_MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "bench" not in p.relative_to(
    PACKAGE).parts)


def _imported_names(path: Path) -> list:
    tree = ast.parse(path.read_text(), str(path))
    names = []
    package = ".".join(("fastaccept", *path.relative_to(PACKAGE).parent.parts))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


@pytest.mark.parametrize("path", PRODUCT_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_product_module_imports_an_instrument(path):
    bad = [n for n in _imported_names(path)
           if n == "fastaccept.bench" or n.startswith("fastaccept.bench.")]
    assert bad == [], f"{path.name} imports {bad}"


def test_the_product_in_use_loads_no_instrument(tmp_path):
    loaded = run_child_json("product_in_use.py", cwd=tmp_path)
    assert "fastaccept._core" in loaded
    assert [m for m in loaded if m.startswith("fastaccept.bench")] == []


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) is not installed")
def test_the_core_extension_has_no_instrument_code():
    core = Path(fastaccept._core.__file__)
    symbols = subprocess.run(["nm", "-a", str(core)], capture_output=True, text=True,
                             timeout=60).stdout
    assert "fa_acceptor_run" in symbols     # the check can see C symbols at all
    for prefix in ("fa_load_", "fa_inline_"):
        assert prefix not in symbols, f"{core.name} links {prefix}* (an instrument)"
