"""The layout's promises: btc stands alone, the product never imports the test-weight writers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_btc_imports_nothing_from_remixer():
    code = ("import sys, numpy as np, btc; btc.extract_features(np.zeros(22050 * 2, np.float32), 44100); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'remixer'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_no_product_module_imports_the_test_weight_writers():
    product = [p for p in (ROOT / "remixer").glob("*.py") if p.name != "tiny_weights.py"] + [ROOT / "predict.py"]
    for path in product:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            assert not any(name.startswith("remixer.testing") for name in names), path.name
