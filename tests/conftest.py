import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAR_N_DIR = REPO.parent / "shared" / "data" / "cifar-n"  # real CIFAR-N files beside the checkout, when present


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests train tiny networks: one intra-op thread is faster for them than two, and on a shared
    2-core machine two spinning torch threads were measured up to ~60× slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def cpu_runs_in_process():
    """`echobench run` on CPU defaults to one worker process per core; tests run the CLI in-process
    with monkeypatches that worker processes would not see, so here the default is one (in-process).
    `test_executors.py` checks the real default; tests that start `python -m echobench run` say --workers."""
    from echobench.harness import local_workers

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local_workers, "default_cpu_workers", lambda threads: 1)
        yield


@pytest.fixture(autouse=True, scope="session")
def echomod_cache_in_tmp(tmp_path_factory):
    """EchoMod's cache of modified images goes to a temporary directory, never the user's cache."""
    before = os.environ.get("ECHOBENCH_CACHE")
    os.environ["ECHOBENCH_CACHE"] = str(tmp_path_factory.mktemp("echomod-cache"))
    yield
    if before is None:
        os.environ.pop("ECHOBENCH_CACHE", None)
    else:
        os.environ["ECHOBENCH_CACHE"] = before


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from echobench.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def cifar10n_file():
    """The real CIFAR-10N label file kept beside the checkout for tests; skip when it is absent."""
    path = CIFAR_N_DIR / "CIFAR-10_human.pt"
    if not path.exists():
        pytest.skip("real CIFAR-10N label file not present")
    return path


@pytest.fixture
def subprocess_env():
    """Environment for running `python -m echobench` in a child process from this checkout."""
    return dict(os.environ, PYTHONPATH=str(REPO))


# A small shapes setting on which a method learns above chance in seconds on 2 CPU cores: 16 px images,
# no ambiguous instances, 3,000 training images, the tiny CNN for 10 epochs (CE reaches ~0.25 test
# accuracy at 30% symmetric noise; chance is 0.10).
TINY_DATASET = {"n_train": 3000, "n_test": 500, "image_size": 16, "ambiguous_fraction": 0.0}
TINY_PROTOCOL = {"name": "smoke", "epochs": 10, "milestones": [8], "crop_padding": 2}


def run_tiny(method: str, noise: str = "symmetric:0.3", *, params: dict | None = None, seed: int = 1,
             dataset: dict | None = None, protocol: dict | None = None) -> dict:
    """Run one cell of `method` on the tiny shapes setting in-process and return its result."""
    from echobench.harness.train_cell import run_cell
    from echobench.harness.suite import parse_suite

    suite = parse_suite({
        "name": "tiny", "datasets": {"shapes": {**TINY_DATASET, **(dataset or {})}}, "noise": [noise],
        "methods": {method: params or {}}, "seeds": [seed], "protocol": {**TINY_PROTOCOL, **(protocol or {})},
    }, "tests")
    (spec,) = suite.expand()
    return run_cell(spec)


@pytest.fixture
def tiny_run():
    """`tiny_run(method, noise=..., params=..., seed=..., dataset=..., protocol=...)` → result dict."""
    return run_tiny
