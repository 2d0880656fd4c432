"""The command line: help with examples, listings, the noise and doctor commands, and bad input."""

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("command", ["run", "ls", "report", "noise", "bench", "doctor"])
def test_help_shows_examples(command, capsys):
    from echobench.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_ls_lists_registries(cli):
    code, out, _ = cli("ls", "methods")
    assert code == 0 and "ce" in out.split()
    code, out, _ = cli("ls", "datasets", "--json")
    names = {d["name"] for d in json.loads(out)}
    assert {"shapes", "cifar10", "cifar100", "cifar10n", "cifar100n"} <= names
    code, out, _ = cli("ls", "suites")
    assert "demo" in out and "smoke" in out


def test_ls_does_not_import_torch(subprocess_env):
    code = "import sys; from echobench.cli import main; main(['ls','noises']); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env, capture_output=True)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["noise", "shapez", "--kind", "symmetric", "--rate", "0.2"], "Did you mean 'shapes'"),
        (["noise", "shapes", "--kind", "symetric", "--rate", "0.2"], "Did you mean 'symmetric'"),
        (["noise", "shapes", "--kind", "symmetric", "--rate", "1.2"], "outside [0, 1)"),
        (["noise", "shapes", "--kind", "pairflip", "--rate", "0.5"], "outnumber"),
        (["run", "--suite", "dmeo"], "Did you mean 'demo'"),
        (["run", "--suite", "missing.yaml"], "does not exist"),
        (["run", "--device", "cuda:7", "--suite", "smoke", "--out", "/nonexistent/never"], "cuda"),
    ],
)
def test_bad_input_gets_a_message_not_a_traceback(cli, args, expected):
    code, out, err = cli(*args)
    assert code == 2
    assert expected in err and "Traceback" not in err


def test_unknown_method_in_suite_file_suggests(cli, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: s\ndatasets: [shapes]\nnoise: [symmetric:0.2]\nmethods: [cee]\nseeds: [1]\nprotocol: smoke\n")
    code, _, err = cli("run", "--suite", f, "--out", tmp_path / "o")
    assert code == 2 and "Did you mean 'ce'" in err
    assert not (tmp_path / "o").exists()  # nothing written for a bad suite


def test_missing_cifar_without_network_names_file_source_and_data_root(cli, tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.utils as tv_utils

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    code, _, err = cli("noise", "cifar10", "--kind", "symmetric", "--rate", "0.2", "--data-root", tmp_path)
    assert code == 2
    assert "data_batch_1" in err and "cifar-10-python.tar.gz" in err and "--data-root" in err


def test_noise_command_on_shapes(cli):
    code, out, _ = cli("noise", "shapes", "--kind", "pairflip", "--rate", "0.45", "--seed", "3", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["noise"] == "pairflip:0.45"
    assert abs(doc["realized_rate"] - 0.45) < 0.03
    assert len(doc["per_class"]) == 10 and all(abs(p["flip_rate"] - 0.45) < 0.08 for p in doc["per_class"])
    code, text, _ = cli("noise", "shapes", "--kind", "pairflip", "--rate", "0.45", "--seed", "3")
    assert "realized noise rate" in text and "most common noisy label" in text


def test_noise_command_on_real_cifar10n_labels(cli, cifar10n_file):
    path = cifar10n_file
    code, out, _ = cli("noise", "cifar10n", "--kind", "worst", "--labels-file", path, "--json")
    doc = json.loads(out)
    assert code == 0 and round(doc["realized_rate"] * 100, 2) == 40.21
    code, out, _ = cli("noise", "cifar10n", "--kind", "random1", "--labels-file", path, "--json")
    assert round(json.loads(out)["realized_rate"] * 100, 2) == 17.23


def test_doctor_json(cli):
    code, out, _ = cli("doctor", "--json")
    doc = json.loads(out)
    assert code == 0 and "torch" in doc["packages"] and set(doc["extras"]) >= {"clip", "onnx", "ray"}


def test_bare_command_prints_help(cli):
    code, out, _ = cli()
    assert code == 0 and "run" in out and "report" in out


def test_bench_knn_json_compares_backends(cli):
    pytest.importorskip("faiss")
    code, out, _ = cli("bench", "knn", "--n", "600", "--dim", "16", "--k", "5", "--json")
    doc = json.loads(out)
    assert code == 0 and set(doc["backends"]) == {"faiss", "torch"}
    code, _, err = cli("bench", "knn", "--n", "10", "--k", "10")
    assert code == 2 and "smaller than --n" in err
