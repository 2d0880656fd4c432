"""Plugins (echobench/plugins.py, docs/plugin-api.md): `--include` files and suite `include:`, entry
points, `module:Class` methods; clashes and broken plugins in one line; a plugin's code as provenance;
the worked example (examples/gce.py) under the smoke protocol, inline, in local worker processes and in
Ray tasks; the documentation checked against the code."""

import dataclasses
import importlib
import inspect
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from echobench import plugins
from echobench.errors import EchobenchError
from echobench.registry import all_registries, refresh_entry_points

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "gce.py"
SMOKE = {"datasets": {"shapes": {"n_train": 600, "n_test": 200}}, "noise": ["symmetric:0.3"], "seeds": [1],
         "protocol": "smoke"}


@pytest.fixture(autouse=True)
def clean_plugins():
    """Each test starts from echobench's own registries and leaves them so (plugins imported, entry
    points read and sys.path entries added by a test are forgotten afterwards)."""
    import echobench.cli.ls  # noqa: F401 - every registry exists before the snapshot
    import echobench.harness.suite  # noqa: F401

    for registry in all_registries():
        registry._read_entry_points()  # installed entry points (none expected) read before the snapshot
    states = {id(r): (r, r.snapshot()) for r in all_registries()}
    modules, path = set(sys.modules), list(sys.path)
    yield
    plugins.forget_loaded()
    for name in set(sys.modules) - modules:
        file = getattr(sys.modules[name], "__file__", None) or ""
        if file.startswith(sys.prefix):  # an installed package the test imported (ray, say), even in a venv under /tmp
            continue
        if file.startswith((str(REPO / "examples"), "/tmp")) or "pytest-of" in file:
            del sys.modules[name]
    sys.path[:] = path
    refresh_entry_points()
    for registry, state in states.values():
        registry.restore(state)


def write_suite(folder: Path, methods, *, include=None, name="plugin-smoke", **changes) -> Path:
    doc = {"name": name, **SMOKE, "methods": methods, **changes}
    if include is not None:
        doc["include"] = include
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def configs(out: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["spec"]["method"] + f"/{json.loads(p.read_text())['spec']['seed']}":
            json.loads(p.read_text()) for p in Path(out).glob("cells/*/config.json")}


def make_distribution(site: Path, module_source: str, module: str, entry_points: str, version: str = "1.2") -> None:
    """A distribution as pip would leave it: its module and NAME.dist-info/{METADATA,entry_points.txt}."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(module_source)
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(entry_points)


# --- --include and include: ---------------------------------------------------------------------------

def test_include_adds_the_example_to_ls_with_its_source(cli):
    code, out, _ = cli("ls", "methods")
    assert code == 0 and "gce" not in out.split()
    code, out, err = cli("ls", "methods", "--include", EXAMPLE, "--json")
    assert code == 0, err
    listed = {m["name"]: m for m in json.loads(out)}
    assert listed["gce"]["source"] == f"plugin file {EXAMPLE}" and "source" not in listed["ce"]


def test_the_example_runs_beside_ce_and_apl_through_include_under_smoke(cli, tmp_path):
    """--include on the command line, the suite naming `gce` (the example suite's methods, smoke-sized)."""
    suite = write_suite(tmp_path, ["ce", "apl", "gce"])
    code, out, err = cli("run", "--suite", suite, "--out", tmp_path / "out", "--include", EXAMPLE, "--device", "cpu",
                         "--threads", "1", "--no-progress", "--json")
    assert code == 0, err
    assert json.loads(out)["computed"] == 3
    cells = configs(tmp_path / "out")
    assert "plugins" not in cells["ce/1"]["environment"] and "plugins" not in cells["apl/1"]["environment"]
    record = cells["gce/1"]["environment"]["plugins"]["method gce"]
    assert record["source"] == f"plugin file {EXAMPLE}" and re.fullmatch(r"[0-9a-f]{16}", record["digest"])
    assert cells["gce/1"]["spec"]["method_params"] == {"q": 0.7, "k": 0.5, "prune_start": 40 / 120,
                                                       "prune_every": 10 / 120}
    result = json.loads((tmp_path / "out" / "cells" / cells["gce/1"]["run_id"] / "result.json").read_text())
    assert result["metrics"]["epochs"] == 2


def test_the_example_suite_includes_the_example_relative_to_itself():
    from echobench.harness.suite import load_suite

    suite = load_suite(str(REPO / "examples" / "gce_suite.yaml"))
    assert suite.includes == (str(EXAMPLE),)
    cells = suite.expand()
    assert {c.method for c in cells} == {"ce", "apl", "gce"} and {c.dataset for c in cells} == {"shapes"}
    assert len(cells) == 12


def test_a_pruning_epoch_zeroes_the_weights_of_samples_below_k():
    """The GCE example's Algorithm-1 step, on a stub task: after `start` epochs, w_i = [p_y > k]."""
    import torch

    plugins.load_includes((str(EXAMPLE),))
    module = sys.modules["gce"]
    assert module.truncated_lq_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([0]), torch.tensor([0.0])) == 0

    class StubTask:
        device = torch.device("cpu")
        protocol = type("P", (), {"epochs": 12})()
        train = type("S", (), {"indices": torch.tensor([0, 2]), "labels": torch.tensor([0, 1])})()

        def predict(self, model, split):
            return torch.tensor([[3.0, 0.0], [3.0, 0.0]])  # sample 2 (label 1) has p_y < 0.5

    method, task = module.GeneralizedCrossEntropy(), StubTask()
    method.begin_epoch(1, None, task)
    assert method.weights.tolist() == [1, 1, 1]
    method.begin_epoch(4, None, task)  # 3 epochs done < start = 40/120 * 12 = 4: no pruning yet
    assert method.weights.tolist() == [1, 1, 1]
    method.begin_epoch(5, None, task)
    assert method.weights.tolist() == [1, 1, 0]


# --- entry points and module:Class ---------------------------------------------------------------------

def test_an_entry_point_registers_lazily_and_runs_the_example_under_smoke(tmp_path, monkeypatch):
    from echobench.harness.runner import run_suite
    from echobench.harness.suite import load_suite
    from echobench.training.method import METHODS

    site = tmp_path / "site"
    make_distribution(site, EXAMPLE.read_text(), "gce_plugin_example",
                      "[echobench.methods]\ngce = gce_plugin_example:GeneralizedCrossEntropy\n")
    monkeypatch.syspath_prepend(str(site))
    refresh_entry_points()
    assert "gce" in METHODS.names()
    assert "gce_plugin_example" not in sys.modules  # listing names imported nothing of the plugin
    assert "entry point gce = gce_plugin_example:GeneralizedCrossEntropy" in METHODS.source("gce").label

    outcome = run_suite(load_suite(str(write_suite(tmp_path, ["gce"]))), tmp_path / "out")
    assert len(outcome.computed) == 1 and not outcome.failed
    record = configs(tmp_path / "out")["gce/1"]["environment"]["plugins"]["method gce"]
    assert record["version"] == "1.2" and "distribution gce-plugin-example 1.2" in record["source"]


def test_a_suite_may_name_a_method_module_colon_class(tmp_path, monkeypatch):
    from echobench.harness.cells import plugin_provenance
    from echobench.harness.suite import load_suite

    shutil.copy(EXAMPLE, tmp_path / "my_gce_module.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = load_suite(str(write_suite(tmp_path, [{"my_gce_module:GeneralizedCrossEntropy": {"q": 0.5}}])))
    (cell,) = suite.expand()
    assert cell.method == "my_gce_module:GeneralizedCrossEntropy" and cell.method_params["q"] == 0.5
    assert plugin_provenance(cell)["method my_gce_module:GeneralizedCrossEntropy"]["source"].startswith(
        "module my_gce_module")


# --- clashes and broken plugins --------------------------------------------------------------------------

CLASH = """from echobench.training.method import NoParams, SingleNetworkMethod, register_method

@register_method("{name}")
class Mine(SingleNetworkMethod):
    Params = NoParams

    def loss(self, logits, targets, indices, epoch, task):
        return logits.sum()
"""


def test_a_name_clash_names_both_sources(cli, tmp_path, monkeypatch):
    (tmp_path / "my_ce.py").write_text(CLASH.format(name="ce"))
    code, _, err = cli("ls", "methods", "--include", tmp_path / "my_ce.py")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "echobench (echobench.baselines.ce:CrossEntropy)" in err and f"plugin file {tmp_path / 'my_ce.py'}" in err

    (tmp_path / "a.py").write_text(CLASH.format(name="mine"))
    (tmp_path / "b.py").write_text(CLASH.format(name="mine"))
    code, _, err = cli("ls", "methods", "--include", tmp_path / "a.py", "--include", tmp_path / "b.py")
    assert code == 2 and f"plugin file {tmp_path / 'a.py'}" in err and f"plugin file {tmp_path / 'b.py'}" in err

    make_distribution(tmp_path / "site", "", "ce_shadow", "[echobench.methods]\nce = ce_shadow:CE\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    refresh_entry_points()
    code, _, err = cli("ls", "methods")
    assert code == 2 and "entry point ce = ce_shadow:CE" in err and "echobench.baselines.ce:CrossEntropy" in err


BROKEN = {
    "import_error": ("import numpy\nimport not_a_module_anywhere\n", "ModuleNotFoundError: No module named "
                     "'not_a_module_anywhere' (line 2)"),
    "syntax_error": ("def f(:\n    pass\n", "SyntaxError"),
    "no_params": (CLASH.format(name="np").replace("    Params = NoParams\n", "    params = None\n"),
                  "declares no `Params`"),
    "params_not_a_dataclass": (CLASH.format(name="nd").replace("Params = NoParams", "Params = dict"),
                               "`Params` must be a dataclass"),
    "wrong_loss_signature": (CLASH.format(name="wl").replace("indices, epoch, task", "indices"),
                             "loss(self, logits, targets, indices) (line 7) cannot be called as loss(self, logits, "
                             "targets, indices, epoch, task)"),
    "no_loss": (CLASH.format(name="nl").replace("def loss", "def lose"), "does not implement loss()"),
    "not_a_method": ("from echobench.training.method import register_method\n\n@register_method('x')\nclass X:\n"
                     "    pass\n", "not a subclass of echobench.training.method.Method"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_one_line_naming_the_file(case, cli, tmp_path):
    source, problem = BROKEN[case]
    path = tmp_path / f"{case}.py"
    path.write_text(source)
    code, _, err = cli("ls", "methods", "--include", path)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(path) in err and problem in err, err


def test_a_broken_entry_point_is_one_line_when_used_and_not_before(cli, tmp_path, monkeypatch):
    make_distribution(tmp_path / "site", "import not_a_module_anywhere\n", "broken_plugin",
                      "[echobench.methods]\nbroken = broken_plugin:Method\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    refresh_entry_points()
    code, out, _ = cli("ls", "methods")
    assert code == 0 and "broken" in out.split()  # listing imports nothing
    code, _, err = cli("run", "--suite", write_suite(tmp_path, ["broken"]), "--dry-run")
    assert code == 2 and "Traceback" not in err and "entry point broken = broken_plugin:Method" in err
    assert str(tmp_path / "site" / "broken_plugin.py") in err and "No module named 'not_a_module_anywhere'" in err


def test_include_paths_are_checked(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "empty").mkdir()
    for path, message in ((tmp_path / "missing.py", "no such file or folder"), (tmp_path / "notes.txt", "not a .py file"),
                          (tmp_path / "empty", "holds no .py file")):
        code, _, err = cli("ls", "methods", "--include", path)
        assert code == 2 and message in err and "Traceback" not in err
    suite = write_suite(tmp_path, ["ce"], include="nowhere.py")
    code, _, err = cli("run", "--suite", suite, "--dry-run")
    assert code == 2 and f"suite {suite}: include nowhere.py: no such file or folder ({tmp_path / 'nowhere.py'})" in err


def test_a_folder_include_imports_its_files_and_they_may_import_each_other(cli, tmp_path):
    folder = tmp_path / "my_plugins"
    folder.mkdir()
    (folder / "shared_bits.py").write_text("SCALE = 2.0\n")
    (folder / "my_method.py").write_text(CLASH.format(name="folder-method").replace(
        "return logits.sum()", "return SCALE * logits.sum()").replace("from echobench", "from shared_bits import SCALE\nfrom echobench"))
    (folder / "_private.py").write_text("raise RuntimeError('not imported')\n")
    code, out, err = cli("ls", "methods", "--include", folder)
    assert code == 0 and "folder-method" in out and f"plugin folder {folder}" in out, err


# --- provenance: a changed plugin ---------------------------------------------------------------------------

def test_a_changed_plugin_is_reported_kept_marked_and_recomputed_only_with_force(cli, tmp_path):
    plugin = tmp_path / "gce_versioned.py"
    plugin.write_text(EXAMPLE.read_text())
    suite = write_suite(tmp_path, ["gce"], include=plugin.name)
    out = tmp_path / "out"
    args = ("run", "--suite", suite, "--out", out, "--device", "cpu", "--threads", "1", "--no-progress", "--json")
    code, first, err = cli(*args)
    assert code == 0 and json.loads(first)["computed"] == 1, err
    plugin.write_text(EXAMPLE.read_text().replace("    q: float = 0.7", "    q: float = 0.7  # tuned later"))

    code, again, err = cli(*args)
    doc = json.loads(again)
    assert code == 0 and doc["computed"] == 0 and doc["skipped"] == 1
    assert "note: method gce" in err and "changed since 1 finished cell(s)" in err and "--force" in err
    (change,) = doc["plugins_changed"].values()
    assert change["was"][0]["digest"] != change["now"]["digest"]

    code, more, _ = cli(*args[:-1], "--seeds", "2", "--json")  # seed 2 runs the new version beside seed 1
    assert code == 0 and json.loads(more)["computed"] == 1
    row = json.loads((out / "report.json").read_text())["results"]
    assert [r["provenance_differs"] for r in row] == [["plugins"]]
    code, report, _ = cli("report", out, "--include", plugin)
    assert code == 0 and "†" in report and "plugins differ" in report

    code, forced, err = cli(*args, "--force")
    assert code == 0 and json.loads(forced)["computed"] == 1 and "note:" not in err


# --- every executor imports the plugins ---------------------------------------------------------------------

def test_local_workers_import_the_included_plugins(tmp_path):
    from echobench.harness.context import RunContext
    from echobench.harness.executors import make_executor
    from echobench.harness.runner import run_suite
    from echobench.harness.suite import load_suite

    suite = load_suite(str(write_suite(tmp_path, ["gce"], include=str(EXAMPLE), seeds=[1, 2])))
    ctx = RunContext.resolve(device="cpu", threads=1)
    outcome = run_suite(suite, tmp_path / "out", ctx, make_executor("local", ctx, workers=2))
    assert outcome.device.startswith("2 workers") and len(outcome.computed) == 2 and not outcome.failed
    for config in configs(tmp_path / "out").values():
        assert config["executor"]["pid"] != os.getpid() and "method gce" in config["environment"]["plugins"]


@pytest.mark.ray
def test_ray_tasks_import_the_included_plugins(tmp_path):
    ray = pytest.importorskip("ray")
    from echobench.harness.context import RunContext
    from echobench.harness.executors import make_executor
    from echobench.harness.runner import run_suite
    from echobench.harness.suite import load_suite

    ctx = RunContext.resolve(threads=1, includes=[str(EXAMPLE)])  # as `run --include examples/gce.py`
    ctx.load_plugins()
    suite = load_suite(str(write_suite(tmp_path, ["ce", "gce"])))
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        outcome = run_suite(suite, tmp_path / "out", ctx, make_executor("ray", ctx))
    finally:
        ray.shutdown()
    assert len(outcome.computed) == 2 and not outcome.failed, outcome.failed
    gce = configs(tmp_path / "out")["gce/1"]
    assert gce["executor"]["name"] == "ray" and gce["executor"]["pid"] != os.getpid()
    assert gce["environment"]["plugins"]["method gce"]["source"] == f"plugin file {EXAMPLE}"


def test_the_context_carries_the_includes_to_other_processes(tmp_path):
    from echobench.harness.context import RunContext

    ctx = RunContext.resolve(includes=[str(EXAMPLE), str(EXAMPLE)])
    assert ctx.includes == (str(EXAMPLE),)
    assert RunContext.from_dict(json.loads(json.dumps(ctx.to_dict()))) == ctx


# --- the documentation ---------------------------------------------------------------------------------------

DOC = REPO / "docs" / "plugin-api.md"


def test_the_documented_example_is_the_example_file():
    text = DOC.read_text()
    block = text.split("<!-- example: examples/gce.py -->\n```python\n", 1)[1].split("```\n", 1)[0]
    assert block == EXAMPLE.read_text()
    assert len(EXAMPLE.read_text().splitlines()) <= 45  # "one file of about 30 lines"


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        owner = None
        for attr in parts[i:]:
            owner, obj = obj, (getattr(obj, attr) if hasattr(obj, attr) else
                               next(f for f in dataclasses.fields(obj) if f.name == attr))
        return owner, obj
    raise ImportError(dotted)


def test_every_documented_name_exists_with_the_documented_parameters():
    block = DOC.read_text().split("<!-- api -->\n```text\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  ")[0] for line in block.splitlines() if line.strip()]
    assert len(lines) > 40
    for line in lines:
        match = re.fullmatch(r"([\w.]+)(?:\((.*)\))?", line)
        assert match, line
        _, obj = _resolve(match[1])
        if match[2] is not None:
            documented = [p.strip() for p in match[2].split(",") if p.strip()]
            actual = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
            assert documented == actual, f"{line}: the code takes {actual}"
    from echobench.plugins import ENTRY_POINT_GROUPS

    for group in ENTRY_POINT_GROUPS.values():
        assert f"`{group}`" in DOC.read_text()


def test_the_readme_section_is_built_on_the_example():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Add your own method", 1)[1].split("\n## ", 1)[0]
    for needle in ("examples/gce.py", "examples/gce_suite.yaml", "--include", "docs/plugin-api.md",
                   "echobench.methods", "register_method", "Zhang & Sabuncu"):
        assert needle in section, needle
