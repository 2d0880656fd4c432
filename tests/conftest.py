import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAR_N_DIR = REPO.parent / "shared" / "data" / "cifar-n"  # real CIFAR-N files beside the checkout, when present


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
