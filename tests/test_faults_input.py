"""Malformed input is refused up front (issue 16, §4 and the `--out` part of §5).

Every case: exit code 2, one line on stderr that names what was wrong, no traceback, and nothing
written (no results directory, no cache, no `runs/`). Suites are refused when they are parsed, so a
`--dry-run` refuses exactly what a real `run` would; command-line values are refused before any data
is loaded or generated.
"""

from __future__ import annotations

import time
import typing

import pytest

from echobench.errors import EchobenchError

SUITE = {
    "name": "name: t",
    "datasets": "datasets: {shapes: {n_train: 200, n_test: 50, image_size: 16}}",
    "noise": "noise: [symmetric:0.3]",
    "methods": "methods: [ce]",
    "seeds": "seeds: [1]",
    "protocol": "protocol: smoke",
}


def suite_text(extra: str = "", **lines: str | None) -> str:
    """The small valid suite above with some top-level lines replaced (None: dropped), plus `extra`."""
    merged = {**SUITE, **lines}
    return "\n".join(line for line in merged.values() if line is not None) + "\n" + extra


BOMB = "".join(f"{k}: &{k} [{', '.join([f'*{p}'] * 9 if p else ['x'] * 9)}]\n"
               for p, k in zip(["", "a", "b", "c", "d", "e", "f", "g"], "abcdefgh"))

BAD_SUITES = {
    # seeds: non-negative integers, a non-empty list
    "negative seed": (suite_text(seeds="seeds: [1, -1]"), "`seeds` must be a non-negative integer, got -1"),
    "boolean seed": (suite_text(seeds="seeds: [true]"), "`seeds` must be a non-negative integer"),
    "float seed": (suite_text(seeds="seeds: [1.5]"), "`seeds` must be a non-negative integer"),
    # empty axes
    "no seeds": (suite_text(seeds="seeds: []"), "`seeds` is empty"),
    "no noise": (suite_text(noise="noise: []"), "`noise` must be a non-empty list"),
    "no methods": (suite_text(methods="methods: []"), "`methods` must be a non-empty list or mapping"),
    "no datasets": (suite_text(datasets="datasets: {}"), "`datasets` must be a non-empty list or mapping"),
    "empty noise in a block": (suite_text("blocks:\n  - {noise: []}\n"), "`noise` must be a non-empty list"),
    # typed fields
    "dataset options not a mapping": (suite_text(datasets="datasets: {shapes: 5}"),
                                      "the options of datasets entry 'shapes' must be a mapping"),
    "dataset option of the wrong type": (suite_text(datasets='datasets: {shapes: {n_train: "many"}}'),
                                         "dataset 'shapes': n_train must be an integer, got 'many'"),
    "unknown dataset option": (suite_text(datasets="datasets: {shapes: {n_trian: 5}}"),
                               "dataset 'shapes' has no option(s) ['n_trian']"),
    "protocol a list": (suite_text(protocol="protocol: [smoke]"), "`protocol` must be a protocol name"),
    "protocol without a name": (suite_text(protocol="protocol: {epochs: 3}"), "`protocol` must be a protocol name"),
    "epochs a string": (suite_text(protocol='protocol: {name: smoke, epochs: "ten"}'),
                        "protocol 'smoke': epochs must be an integer, got 'ten'"),
    "milestones a string": (suite_text(protocol="protocol: {name: smoke, milestones: abc}"),
                            "milestones must be a list of integers"),
    "unknown network": (suite_text(protocol="protocol: {name: smoke, model: resnet99}"), "unknown model 'resnet99'"),
    "val_fraction out of range": (suite_text(protocol="protocol: {name: smoke, val_fraction: 2}"),
                                  "val_fraction must be in (0, 1)"),
    "alpha a string": (suite_text(methods='methods: [{apl: {alpha: "abc"}}]'),
                       "method 'apl': alpha must be a number, got 'abc'"),
    "grad_clip a string": (suite_text(methods='methods: [{apl: {grad_clip: "abc"}}]'),
                           "method 'apl': grad_clip must be a number or null, got 'abc'"),
    "boolean a string": (suite_text(methods='methods: [{celc: {official_threshold: "no"}}]'),
                         "method 'celc': official_threshold must be true or false, got 'no'"),
    "int field a float": (suite_text(methods="methods: [{co-teaching: {num_gradual: 2.5}}]"),
                          "method 'co-teaching': num_gradual must be an integer, got 2.5"),
    "method options a list": (suite_text(methods="methods: [{apl: [1]}]"),
                              "the options of methods entry 'apl' must be a mapping"),
    "unknown hyperparameter": (suite_text(methods="methods: [{apl: {alhpa: 1.0}}]"),
                               "method 'apl' has no option(s) ['alhpa']"),
    "selection tau a string": (suite_text("kind: selection\nselection: {tau: abc}\n", methods=None),
                               "`selection`: tau must be a number or null, got 'abc'"),
    "selection negative base_seed": (suite_text("kind: selection\nselection: {base_seed: -1}\n", methods=None),
                                     "`selection`: base_seed must be a non-negative integer, got -1"),
    "runtime negative seed": ("name: r\nkind: runtime\nruntime: {cpu: {seed: -1}}\n",
                              "`runtime.cpu.seed` must be a non-negative integer"),
    "runtime steps beyond the scheduler": ("name: r\nkind: runtime\nruntime: {cpu: {steps: 100000}}\n",
                                           "`runtime.cpu.steps` must be a positive integer up to 1000"),
    # the name becomes runs/NAME
    "name with a path": (suite_text(name="name: ../../../x"), "`name` must be a plain name"),
    "name absolute": (suite_text(name="name: /tmp/x"), "`name` must be a plain name"),
    "name a list": (suite_text(name="name: [a]"), "`name` must be a plain name"),
    # YAML itself
    "duplicate key": (suite_text("seeds: [2]\n"), "the key 'seeds' is given twice in one mapping"),
    "duplicate nested key": (suite_text(datasets="datasets: {shapes: {n_train: 200, n_train: 300}}"),
                             "the key 'n_train' is given twice"),
    "alias bomb": (BOMB + suite_text(), "its aliases expand to more than 100,000 values"),
    "recursive alias": ("x: &x [*x]\n" + suite_text(), "an alias refers to a node that contains it"),
    "nested too deeply": ("x: " + "[" * 300 + "]" * 300 + "\n" + suite_text(), "nested more than 100 levels deep"),
    "python tag": (suite_text("x: !!python/object/apply:os.system [echo]\n"), "could not determine a constructor"),
    "not YAML": ("name: t\nseeds: [1\n", "is not valid YAML (line"),
    "not UTF-8": (b"name: \xff\xfe\n", "cannot be read as UTF-8 text"),
}


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A clean working directory, with echobench's data and cache roots inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ECHOBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ECHOBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def refused(capsys, *args):
    """Run the CLI in-process; return its stderr after asserting a clean refusal: exit 2, one line, no
    traceback (argparse's errors exit through SystemExit, echobench's through the return code)."""
    from echobench.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and "error:" in err, err
    return err


def written(folder, *keep):
    """Everything under `folder` except the names in `keep`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name not in keep)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("case", list(BAD_SUITES))
def test_malformed_suite_is_refused_when_parsed(case, dry_run, capsys, here):
    text, message = BAD_SUITES[case]
    (here / "s.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    started = time.perf_counter()
    err = refused(capsys, "run", "--suite", "s.yaml", "--out", here / "out", "--no-progress",
                  *(["--dry-run"] if dry_run else []))
    assert message in err
    assert time.perf_counter() - started < 5  # refused, not computed
    assert written(here, "s.yaml") == []


BAD_COMMANDS = {
    # seeds on every command that takes one (numpy tracebacks before)
    "noise --seed -1": (["noise", "shapes", "--kind", "symmetric", "--rate", "0.3", "--seed", "-1"],
                        "argument --seed: a seed must be a non-negative integer, got '-1'"),
    "modify --seed -1": (["modify", "shapes", "--noise", "symmetric:0.3", "--seed", "-1"], "argument --seed"),
    "select --seed -1": (["select", "shapes", "--noise", "symmetric:0.3", "--seed", "-1"], "argument --seed"),
    "select --base-seed -1": (["select", "shapes", "--noise", "symmetric:0.3", "--base-seed", "-1"],
                              "argument --base-seed"),
    "run --seeds -1": (["run", "--suite", "smoke", "--seeds", "1", "-1"], "argument --seeds"),
    "bench knn --seed -1": (["bench", "knn", "--seed", "-1"], "argument --seed"),
    "bench train --seed -1": (["bench", "train", "--seed", "-1"], "argument --seed"),
    "bench echoselect --seed -1": (["bench", "echoselect", "--seed", "-1"], "argument --seed"),
    "bench engines --seed -1": (["bench", "engines", "--seed", "-1"], "argument --seed"),
    "train-echomod --seed -1": (["train-echomod", "--out", "m", "--seed", "-1"], "argument --seed"),
    "train-echomod --world-seed -1": (["train-echomod", "--out", "m", "--world-seed", "-1"], "argument --world-seed"),
    "eval-echomod --seed -1": (["eval-echomod", "m", "--seed", "-1"], "argument --seed"),
    # command-line options of the wrong type, through the same checks as a suite's
    "select --dataset-option n_train=many": (
        ["select", "shapes", "--noise", "symmetric:0.3", "--dataset-option", "n_train=many"],
        "dataset 'shapes': n_train must be an integer, got 'many'"),
    "select --dataset-option unknown": (
        ["select", "shapes", "--noise", "symmetric:0.3", "--dataset-option", "bogus=1"],
        "dataset 'shapes' has no option(s) ['bogus']"),
    "select --dataset-option alias": (
        ["select", "shapes", "--noise", "symmetric:0.3", "--dataset-option", "x=&a [*a]"],
        "an alias refers to a node that contains it"),
    # resource bounds
    "run --threads 100000": (["run", "--suite", "smoke", "--threads", "100000"], "--threads must be an integer from 1"),
    "run --workers 100000": (["run", "--suite", "smoke", "--workers", "100000"], "--workers must be at most"),
    "run --workers 100000 --dry-run": (["run", "--suite", "smoke", "--workers", "100000", "--dry-run"],
                                       "--workers must be at most"),
    "bench knn --n huge": (["bench", "knn", "--n", "10000000000"], "would need at least"),
    "bench echoselect --n huge": (["bench", "echoselect", "--n", "100000000000"], "would need at least"),
    "bench train --n huge": (["bench", "train", "--n", "100000000000", "--device", "cpu"], "would need at least"),
    "bench engines --batch-sizes huge": (["bench", "engines", "--batch-sizes", "100000000", "--device", "cpu"],
                                         "would need at least"),
    "bench engines --resolution huge": (["bench", "engines", "--resolution", "1000000", "--device", "cpu"],
                                        "would need at least"),
    # folders that a command writes its own files into (§5)
    "select --out a file": (["select", "shapes", "--noise", "symmetric:0.3", "--out", "afile"],
                            "--out afile is a file, not a folder"),
    "select --out under a file": (["select", "shapes", "--noise", "symmetric:0.3", "--out", "afile/sub"],
                                  "afile is a file, so no folder can be made under it"),
    "report --runtime --out a file": (["report", "--runtime", "--out", "afile"], "--out afile is a file, not a folder"),
    "report --runtime --out under a file": (["report", "--runtime", "--out", "afile/sub"],
                                            "afile is a file, so no folder can be made under it"),
}


@pytest.mark.parametrize("case", list(BAD_COMMANDS))
def test_malformed_command_line_is_refused_up_front(case, capsys, here):
    argv, message = BAD_COMMANDS[case]
    (here / "afile").write_text("mine")
    err = refused(capsys, *argv, *(["--no-progress"] if argv[0] in ("run", "modify", "select") else []))
    assert message in err
    assert written(here, "afile") == [] and (here / "afile").read_text() == "mine"


# --- the one type check, on every method's Params and on Protocol ------------------------------------

def _wrong_value(annotation):
    """A value of the wrong type for `annotation` (a string for non-strings, a number for strings)."""
    return 5 if annotation is str else "abc"


def _method_fields():
    from echobench.training.method import METHODS

    for name in METHODS.names():
        params = METHODS.get(name).Params
        for field, annotation in typing.get_type_hints(params).items():
            yield name, field, annotation


def test_every_hyperparameter_of_every_method_is_type_checked():
    from echobench.training.method import METHODS

    fields = list(_method_fields())
    assert len(fields) > 80  # every registered method's Params
    for name, field, annotation in fields:
        with pytest.raises(EchobenchError, match=f"method '{name}': {field} must be"):
            METHODS.get(name).resolve_params("shapes", {field: _wrong_value(annotation)})
        if annotation is bool:
            with pytest.raises(EchobenchError, match="true or false"):
                METHODS.get(name).resolve_params("shapes", {field: "no"})


def test_every_protocol_field_is_type_checked():
    from echobench.training.protocols import Protocol, get_protocol

    for field, annotation in typing.get_type_hints(Protocol).items():
        if field == "name":
            continue
        with pytest.raises(EchobenchError, match=f"protocol 'smoke': {field} must be"):
            get_protocol("smoke", {field: _wrong_value(annotation)})


def test_the_type_rules():
    from pathlib import Path

    from echobench.checks import matches

    ok = [(3, float), (3.5, float), (True, bool), (None, float | None), (2.0, float | None), ([1, 2], tuple[int, ...]),
          ("x", Path), ({"a": 1}, dict), (7, int)]
    bad = [("1", float), (True, float), ("no", bool), (1, bool), (2.5, int), (True, int), ([1, "a"], tuple[int, ...]),
           ("abc", float | None), (5, str), ([1], dict)]
    assert all(matches(v, a) for v, a in ok), [(v, a) for v, a in ok if not matches(v, a)]
    assert not any(matches(v, a) for v, a in bad), [(v, a) for v, a in bad if matches(v, a)]


def test_valid_values_still_pass_and_ints_are_accepted_for_floats():
    from echobench.harness.suite import parse_suite

    suite = parse_suite({"name": "ok", "datasets": {"shapes": {"n_train": 200}}, "noise": "symmetric:0.3",
                         "methods": [{"apl": {"alpha": 1, "grad_clip": None}}, {"celc": {"official_threshold": False}}],
                         "seeds": [0, 2], "protocol": {"name": "smoke", "lr": 1e-3, "milestones": [1]}}, "t")
    cells = suite.expand()
    assert len(cells) == 4 and {c.seed for c in cells} == {0, 2}
    with pytest.raises(EchobenchError, match="--seeds must be a non-negative integer"):
        suite.expand(seeds=[-1])


# --- YAML -------------------------------------------------------------------------------------------

def test_yaml_reads_exponents_as_numbers_and_leaves_safe_loader_alone():
    import yaml

    from echobench.yamlsafe import load_yaml

    assert load_yaml("lr: 1e-4\nx: 1.5e3\ns: '1e-4'\nn: 5", "t") == {"lr": 1e-4, "x": 1500.0, "s": "1e-4", "n": 5}
    assert yaml.safe_load("lr: 1e-4") == {"lr": "1e-4"}  # PyYAML's own loader is not changed


def test_yaml_alias_bomb_is_refused_fast_and_small():
    import resource

    from echobench.yamlsafe import load_yaml

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(EchobenchError, match="aliases expand to more than"):
        load_yaml(BOMB + "top: *h\n", "bomb")
    assert time.perf_counter() - started < 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing was expanded
    # a few aliases are fine, merges included
    doc = load_yaml("base: &b {epochs: 2}\np: {<<: *b, name: smoke}\nq: [*b, *b]\n", "ok")
    assert doc["p"] == {"epochs": 2, "name": "smoke"} and doc["q"] == [{"epochs": 2}] * 2


# --- the registered suites and the folders commands write into ---------------------------------------

def test_registered_suites_all_still_load():
    from echobench.harness.suite import SUITES, load_suite

    for name in SUITES.names():
        suite = load_suite(name)
        assert suite.name == name and (suite.expand() or suite.expand_selection() or suite.runtime_variants())


def test_report_runtime_out_writes_only_its_own_files(cli, here):
    folder = here / "shared"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "runtime.md.tmp").write_text("mine too")
    code, _, err = cli("report", "--runtime", "--out", folder)
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "runtime.json", "runtime.md", "runtime.md.tmp"]
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "runtime.md.tmp").read_text() == "mine too"


def test_select_out_writes_only_its_own_files(cli, here):
    import os

    os.umask(umask := os.umask(0o022))  # read the umask (and leave it as it was)
    folder = here / "shared"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    code, _, err = cli("select", "shapes", "--noise", "symmetric:0.3", "--out", folder, "--no-progress",
                       "--dataset-option", "n_train=120", "--dataset-option", "n_test=20",
                       "--dataset-option", "image_size=16")
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "select.json", "select.md",
                                                        "similarity_hist.png", "tau_sweep.png"]
    assert (folder / "notes.txt").read_text() == "mine"
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in folder.iterdir() if p.name != "notes.txt")
