"""Every third-party module the package imports is declared where it is needed (issue 19, item 5).

`echobench/echoalign/echoselect.py` imported scipy, which no extra declared: it arrived only through
cleanlab in `dev`/`peers`, so a GPU user with `.[gpu,clip]` saw `echobench select` fail after the
expensive EchoMod and CLIP stages. This test reads every import of the installed code (echobench/,
engines/, baselines/) with `ast` (including `importlib.import_module("name")` with a literal name)
and checks each third-party module against pyproject.toml: `NEEDED_BY` says which extras need a
module ("core": the base dependencies), `DISTRIBUTIONS` which distributions provide it, and each
extra that needs it (or the core list) must declare one of them. A new import fails here until it is
classified, so the declaration cannot be forgotten again.
"""

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("echobench", "engines", "baselines")

# Import name → the distributions that provide it (any one of them will do).
DISTRIBUTIONS = {
    "cv2": {"opencv-python-headless", "opencv-python"},
    "yaml": {"pyyaml"},
    "PIL": {"pillow"},
    "faiss": {"faiss-cpu", "faiss-gpu"},
    "open_clip": {"open-clip-torch"},
    "sklearn": {"scikit-learn"},
    "onnxruntime": {"onnxruntime", "onnxruntime-gpu"},
    "huggingface_hub": {"huggingface-hub"},
    "ray": {"ray"},
}
# Import name → where it must be declared: "core", or every extra listed (the extras that install the
# feature importing it).
NEEDED_BY = {
    "numpy": {"core"}, "torch": {"core"}, "torchvision": {"core"}, "cv2": {"core"}, "tabulate": {"core"},
    "yaml": {"core"}, "tqdm": {"core"}, "matplotlib": {"core"}, "scipy": {"core"}, "PIL": {"core"},
    "diffusers": {"gpu"}, "transformers": {"gpu"}, "huggingface_hub": {"gpu"},
    "open_clip": {"clip"},
    "faiss": {"clip", "peers"},
    "cleanlab": {"peers"},
    "onnxruntime": {"onnx", "onnx-gpu"},
    "onnx": {"onnx", "onnx-gpu", "tensorrt"},
    "onnxscript": {"onnx", "onnx-gpu", "tensorrt"},
    "tensorrt": {"tensorrt"},
    "ray": {"ray"},
}
# Probed with importlib.util.find_spec only (optional speedups or library locations, never required).
PROBED_ONLY = {"accelerate", "tensorrt_libs"}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party module → the files importing it."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
                      and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                    names = [node.args[0].value]
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in ("__future__", "echobench"):
                        continue
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def normalise(requirement: str) -> str:
    """'open_clip_torch>=2.20' → 'open-clip-torch'; 'ray[default]>=2.9' → 'ray'."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    out = {"core": {normalise(r) for r in project["dependencies"]}}
    out.update({extra: {normalise(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()})
    return out


def test_every_third_party_import_is_declared_by_the_extras_that_need_it():
    imports = third_party_imports()
    assert {"scipy", "torch", "diffusers"} <= set(imports)  # the scan sees the package
    unclassified = {m: sorted(files)[:3] for m, files in imports.items() if m not in NEEDED_BY and m not in PROBED_ONLY}
    assert not unclassified, f"classify these imports in NEEDED_BY (and declare them in pyproject.toml): {unclassified}"
    missing = missing_declarations(imports, declared())
    assert not missing, "\n".join(missing)


def missing_declarations(imports: dict[str, set[str]], decl: dict[str, set[str]]) -> list[str]:
    missing = []
    for module in sorted(imports):
        if module in PROBED_ONLY:
            continue
        providers = DISTRIBUTIONS.get(module, {normalise(module)})
        for where in sorted(NEEDED_BY[module]):
            if not providers & decl.get(where, set()):
                missing.append(f"{module} (imported by {sorted(imports[module])[0]}) is not declared by "
                               f"{'the core dependencies' if where == 'core' else f'extra {where!r}'}: "
                               f"add one of {sorted(providers)}")
    return missing


def test_the_check_would_have_caught_scipy():
    """The defect of issue 19: scipy declared nowhere (it came through cleanlab)."""
    without = {where: names - {"scipy"} for where, names in declared().items()}
    missing = missing_declarations(third_party_imports(), without)
    assert len(missing) == 1 and missing[0].startswith("scipy (imported by echobench/echoalign/echoselect.py)")


def test_dev_keeps_the_test_plugins():
    assert {"pytest-timeout", "pytest-xdist"} <= declared()["dev"]
