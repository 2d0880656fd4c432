"""echobench installs inside its own namespace: `engines/` and `baselines/` become `echobench.engines`
and `echobench.baselines` in a regular (wheel) install, an editable install and a bare checkout on
PYTHONPATH, and nothing generic lands at the top of site-packages."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = ("import echobench, echobench.engines.eager.config as e, echobench.baselines.apl as b;"
         "from echobench.training.method import METHODS;"
         "assert METHODS.get('apl') is b.ActivePassiveLoss;"
         "print(echobench.__file__); print(e.__file__); print(b.__file__)")


def isolated(code: str, *paths: Path, cwd: Path) -> list[str]:
    """Run `code` with no site processing (no .pth finders) and only `paths` plus this interpreter's
    site-packages (for torch and friends) to import from; returns the printed lines."""
    search = [*map(str, paths), sysconfig.get_paths()["purelib"]]
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = {search!r}; {code}"],
                         cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.split()


def build(tmp_path: Path, hook: str) -> Path:
    """A wheel (build_wheel) or an editable wheel (build_editable) of this checkout, unpacked."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.{hook}({str(dist)!r})"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("*.whl")
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return target


def test_a_wheel_holds_only_the_echobench_package(tmp_path):
    target = build(tmp_path, "build_wheel")
    top = {p.name for p in target.iterdir()}
    assert top == {"echobench", "echobench-0.1.0.dist-info"}
    for name in ("engines/eager/engine.py", "engines/procedural/engine.py", "baselines/apl.py", "suites/demo.yaml",
                 "harness/runner.py", "cli/__init__.py"):
        assert (target / "echobench" / name).is_file(), name
    lines = isolated(PROBE, target, cwd=tmp_path)
    assert all(line.startswith(str(target)) for line in lines), lines


def test_a_wheel_runs_a_suite(tmp_path):
    target = build(tmp_path, "build_wheel")
    isolated("import sys; from echobench.cli import main; sys.exit(main(['run', '--suite', 'smoke', '--seeds', '1', "
             f"'--out', {str(tmp_path / 'out')!r}, '--no-progress', '--threads', '1', '--device', 'cpu']))",
             target, cwd=tmp_path)
    assert len(list((tmp_path / "out" / "cells").glob("*/result.json"))) == 2


def test_an_editable_install_maps_the_folders_of_the_checkout(tmp_path):
    target = build(tmp_path, "build_editable")
    lines = isolated(f"import site; site.addsitedir({str(target)!r}); {PROBE}", cwd=tmp_path)
    assert lines == [str(REPO / "echobench" / "__init__.py"), str(REPO / "engines" / "eager" / "config.py"),
                     str(REPO / "baselines" / "apl.py")]


def test_a_bare_checkout_on_the_path_maps_them_too(tmp_path):
    lines = isolated(PROBE, REPO, cwd=tmp_path)
    assert lines == [str(REPO / "echobench" / "__init__.py"), str(REPO / "engines" / "eager" / "config.py"),
                     str(REPO / "baselines" / "apl.py")]
