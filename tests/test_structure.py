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


def _product_modules() -> dict[str, Path]:
    """Every module of the product by dotted name (a package by its own name, from its __init__), testing/ and
    __main__ left out."""
    found = {}
    for path in (ROOT / "remixer").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "testing" in parts or parts[-1] == "__main__" or parts == ("remixer", "__init__"):
            continue
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def test_no_product_module_imports_the_test_weight_writers():
    product = [p for name, p in _product_modules().items() if name != "remixer.tiny_weights"] + [ROOT / "predict.py"]
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


def _remixer_imports(path: Path, modules: set[str]) -> set[str]:
    """Every remixer module a file imports, at any level (lazy imports and TYPE_CHECKING ones included);
    `from remixer.decoding import cache` imports the module remixer.decoding.cache, not the package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("remixer.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "remixer":
            for alias in node.names:
                named = f"{node.module}.{alias.name}"
                found.add(named if named in modules or node.module == "remixer" else node.module)
    return found


def test_product_modules_import_each_other_without_a_circle():
    modules = _product_modules()
    graph = {name: {m for m in _remixer_imports(path, set(modules)) if m in modules and m != name}
             for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "import circle: " + " -> ".join(trail[trail.index(name):] + [name])
        state[name] = "open"
        for target in sorted(graph[name]):
            visit(target, trail + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])
    # Loading sits below generation: neither conversion nor models reaches the generation module.
    assert "remixer.generation" not in graph["remixer.conversion"] | graph["remixer.models"]


def test_each_module_imports_alone_and_the_package_exports_the_api():
    names = sorted(_product_modules())
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    for loaded in [m for m in sys.modules if m.startswith('remixer')]:\n"
            "        del sys.modules[loaded]\n"
            "    importlib.import_module(name)\n"
            "from remixer import Remixer, RemixRequest, RemixResult, RemixerError\n"
            "assert issubclass(RemixerError, ValueError) and Remixer.__module__ == 'remixer.pipeline'\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_importing_the_package_loads_no_model_library():
    code = "import sys, remixer, remixer.weights; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_benchmarks_and_tools_never_import_the_tests():
    for path in [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tools").glob("*.py")]:
        text = path.read_text()
        assert "from tests" not in text and "import tests" not in text, path.name
        assert "sys.path.insert(0, str(Path(__file__).resolve().parents[1]))" not in text, path.name


def test_the_layout_table_lists_exactly_the_modules():
    import re

    guide = (ROOT / "docs" / "development.md").read_text()
    table = guide[guide.index("## Layout"):guide.index("## Tests")]
    listed = set(re.findall(r"^\| `remixer/(\w+)\.py` \|", table, flags=re.M))
    modules = {p.stem for p in (ROOT / "remixer").glob("*.py")} - {"__init__", "__main__"}
    assert listed == modules, (sorted(modules - listed), sorted(listed - modules))
    for package in ("testing", "decoding"):  # a package's row names every module in it
        row = next(line for line in table.splitlines() if line.startswith(f"| `remixer/{package}/`"))
        parts = {p.stem for p in (ROOT / "remixer" / package).glob("*.py")} - {"__init__"}
        assert all(f"`{name}`" in row for name in parts), (package, sorted(parts))


def test_no_class_of_the_decode_loop_is_longer_than_150_lines():
    """The decode package keeps one idea per class (issue 47): the loop, the cache, the capture, the step."""
    sizes = [(node.end_lineno - node.lineno + 1, f"{path.name}:{node.name}")
             for path in (ROOT / "remixer" / "decoding").glob("*.py")
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)]
    assert max(sizes)[0] <= 150, sorted(sizes)[-3:]


def test_the_request_layer_and_the_clis_help_load_no_torch():
    """`musicgen-remix --help` and the request table answer without loading torch (2.4 s of imports)."""
    code = ("import sys, remixer.request, remixer.cli\n"
            "try:\n    remixer.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('loaded:', sorted({'torch', 'transformers'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "--prompt" in done.stdout and done.stdout.strip().endswith("loaded: []"), done.stdout[-300:]


def test_errors_docstring_lists_every_error_class_of_the_family():
    import importlib
    import inspect
    import pkgutil
    import re

    import remixer
    from remixer.errors import RemixerError

    found = set()
    for module in pkgutil.walk_packages(remixer.__path__, "remixer."):
        if module.name.split(".")[1] in ("testing", "__main__"):
            continue
        loaded = importlib.import_module(module.name)
        for name, value in vars(loaded).items():
            if inspect.isclass(value) and issubclass(value, RemixerError) and value is not RemixerError \
                    and value.__module__ == loaded.__name__:
                found.add(f"{module.name.split('.')[1]}.{name}")  # by the part: decoding.DecodingError
    listed = set(re.findall(r"^- (\w+\.\w+):", importlib.import_module("remixer.errors").__doc__, flags=re.M))
    assert listed == found, (sorted(found - listed), sorted(listed - found))
    names = [entry.split(".")[1] for entry in found]
    assert len(names) == len(set(names))  # one class per name (one CheckpointError)


def test_no_function_in_the_product_is_longer_than_60_lines():
    longest = []
    for path in (ROOT / "remixer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                longest.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT)}:{node.name}"))
    assert max(longest)[0] <= 60, sorted(longest)[-3:]
