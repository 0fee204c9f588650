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


def test_the_cog_image_and_single_remixes_do_not_need_ray():
    # Ray is the "batch" extra: the predictor, the CLI and the batch module itself import without it.
    code = ("import sys; sys.modules['ray'] = None; import predict, remixer.cli, remixer.batch, remixer.manifest; "
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    cog_requirements = (ROOT / "requirements.txt").read_text().lower()
    assert "ray" not in {line.split("==")[0].strip() for line in cog_requirements.splitlines()}
    assert "ray==" in (ROOT / "requirements-batch.txt").read_text()
