"""Several cells per GPU (`--cells-per-gpu K|auto`): the local plan, Ray's fractional GPUs, `auto`'s
choice from a (stand-in) memory probe, and on CPU the same per-cell results as one cell after another
at the same torch thread count. The packing factor is provenance: recorded, never in the run id."""

import json
from pathlib import Path

import pytest

from echobench.errors import EchobenchError
from echobench.harness.context import RunContext
from echobench.harness.executors import make_executor
from echobench.harness.runner import run_suite
from echobench.harness.suite import load_suite


def results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in Path(out).glob("cells/*/result.json")}


def comparable(result: dict) -> dict:
    """Metrics, noise facts, sizes and curves: everything but the seconds."""
    curves = [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in result["curves"]]
    return {"metrics": result["metrics"], "noise": result["noise"], "sizes": result["sizes"], "curves": curves}


@pytest.fixture(scope="module")
def one_by_one(tmp_path_factory):
    """`smoke` with seed 1, inline (one cell after another), one torch thread."""
    out = tmp_path_factory.mktemp("smoke-inline")
    ctx = RunContext.resolve(device="cpu", threads=1)
    outcome = run_suite(load_suite("smoke"), out, ctx, make_executor("local", ctx, workers=1), seeds=[1])
    assert len(outcome.computed) == 2 and not outcome.failed
    return results(out)


def test_cells_per_gpu_on_cpu_gives_the_results_of_one_cell_after_another(one_by_one, tmp_path):
    ctx = RunContext.resolve(device="cpu", threads=1)
    executor = make_executor("local", ctx, cells_per_gpu="2")
    outcome = run_suite(load_suite("smoke"), tmp_path, ctx, executor, seeds=[1])
    assert len(outcome.computed) == 2 and not outcome.failed
    assert outcome.device == "2 workers on cpu, 1 thread(s) each"
    packed = results(tmp_path)
    assert packed.keys() == one_by_one.keys()  # same run ids: the packing factor is not identity
    for rid in packed:
        assert comparable(packed[rid]) == comparable(one_by_one[rid]), rid
    for config in tmp_path.glob("cells/*/config.json"):
        executor = json.loads(config.read_text())["executor"]
        assert executor["cells_per_gpu"] == 2 and executor["cells_per_gpu_source"] == "given"
        assert executor["threads"] == 1 and "cells_per_gpu" not in json.loads(config.read_text())["spec"]


def test_auto_on_cpu_records_the_measurement_it_chose_from(one_by_one, tmp_path):
    from echobench.harness.executors import AutoPackedLocal
    from echobench.harness.packing import choose_cells_per_gpu

    probed = []

    def probe(key, device):  # stand-in: 1 GiB per cell
        probed.append(key)
        return {"device_mib": 1024.0, "host_mib": 1024.0}

    def choose(cells, device, data_root=None):  # 2.5 GiB available at 85 % headroom → 2 cells
        return choose_cells_per_gpu(cells, device, probe=probe, data_root=data_root,
                                    free_memory=lambda d: {"device_mib": 2560.0, "host_mib": 2560.0, "devices": 1})

    ctx = RunContext.resolve(device="cpu", threads=1)
    executor = AutoPackedLocal(choose=choose)
    outcome = run_suite(load_suite("smoke"), tmp_path, ctx, executor, seeds=[1])
    assert not outcome.failed and outcome.device == "2 workers on cpu, 1 thread(s) each"
    assert len(probed) == 1 and probed[0].model == "tiny-cnn" and probed[0].networks == 1  # one shape, probed once
    for rid, result in results(tmp_path).items():
        assert comparable(result) == comparable(one_by_one[rid])
    executor_doc = json.loads(next(tmp_path.glob("cells/*/config.json")).read_text())["executor"]
    assert executor_doc["cells_per_gpu"] == 2 and executor_doc["cells_per_gpu_source"] == "auto"
    assert executor_doc["packing"]["per_cell_host_mib"] == 1024.0


def _fake_cells():
    from echobench.harness.suite import parse_suite

    return parse_suite({"name": "p", "datasets": {"shapes": {"n_train": 300, "n_test": 100}}, "noise": ["symmetric:0.3"],
                        "methods": ["ce", "co-teaching"], "seeds": list(range(1, 11)), "protocol": "smoke"}, "tests").expand()


@pytest.mark.parametrize("per_cell, free, devices, max_k, expected, limited_by", [
    ((10_000, 3_000), (80_000, 1_000_000), 1, 16, 6, "device memory"),  # 6 × 10 GB ≤ 85 % of 80 GB < 7 × 10 GB
    ((10_000, 3_000), (80_000, 30_000), 4, 16, 2, "host memory"),  # 4 GPUs × 2 cells × 3 GB ≤ 25.5 GB
    ((1_000, 500), (80_000, 1_000_000), 1, 8, 8, "max"),
    ((90_000, 500), (80_000, 1_000_000), 1, 16, 1, "device memory"),  # not even one fits: one per GPU anyway
])
def test_auto_never_plans_more_memory_than_is_free(per_cell, free, devices, max_k, expected, limited_by):
    from echobench.harness.packing import MEMORY_HEADROOM, choose_cells_per_gpu

    keys = []

    def probe(key, device):
        keys.append(key)
        # the two-network method (co-teaching) probes two networks: it is the one that needs per_cell
        return {"device_mib": per_cell[0] if key.networks == 2 else per_cell[0] / 2, "host_mib": per_cell[1]}

    packing = choose_cells_per_gpu(_fake_cells(), "cuda", probe=probe, max_k=max_k,
                                   free_memory=lambda d: {"device_mib": free[0], "host_mib": free[1], "devices": devices})
    assert packing.cells_per_gpu == expected and packing.facts["limited_by"] == limited_by
    assert sorted(k.networks for k in keys) == [1, 2]  # one probe per distinct shape, not per cell
    if expected > 1:
        assert expected * per_cell[0] <= MEMORY_HEADROOM * free[0]
        assert devices * expected * per_cell[1] <= MEMORY_HEADROOM * free[1]


def test_auto_refuses_cells_that_may_generate_with_a_diffusion_model():
    from echobench.harness.packing import choose_cells_per_gpu
    from echobench.harness.suite import RunSpec

    (cell,) = [c for c in _fake_cells() if c.method == "ce"][:1]
    generating = RunSpec("cifar10", {}, "symmetric:0.2", "echoalign", {}, 1, cell.protocol)
    with pytest.raises(EchobenchError, match="diffusion engine"):
        choose_cells_per_gpu([cell, generating], "cuda", probe=lambda k, d: {}, free_memory=lambda d: {})


def test_cells_per_gpu_plans_k_workers_on_each_visible_gpu(monkeypatch):
    import echobench.environment as environment
    import echobench.harness.local_workers as local_workers

    monkeypatch.setattr(environment, "resolve_device", lambda requested="auto": requested if requested.startswith("cuda") else "cuda")
    monkeypatch.setattr(local_workers, "visible_gpus", lambda: ["2", "5"])
    ctx = RunContext.resolve(device="cuda")
    plan = local_workers.local_plan(ctx, None, 3)
    assert plan.workers == 6 and sorted(plan.gpus) == ["2", "2", "2", "5", "5", "5"] and plan.cells_per_gpu == 3
    assert "6 workers on GPUs 2,5, 3 cells per GPU" == plan.describe()
    assert local_workers.local_plan(ctx, 6, 3).workers == 6
    with pytest.raises(EchobenchError, match="--workers 4 contradicts --cells-per-gpu 3"):
        local_workers.local_plan(ctx, 4, 3)
    one = local_workers.local_plan(RunContext.resolve(device="cuda:1"), None, 2)
    assert one.workers == 2 and one.gpus == ("5", "5") and one.device == "cuda"
    monkeypatch.setattr(environment, "resolve_device", lambda requested="auto": "cpu")
    cpu = local_workers.local_plan(RunContext.resolve(device="cpu", threads=1), None, 2)
    assert cpu.workers == 2 and cpu.gpus == (None, None) and cpu.threads == 1


def test_ray_tasks_ask_for_a_kth_of_a_gpu():
    from echobench.harness.ray_tasks import _task_resources

    class FakeRay:
        def __init__(self, gpus):
            self.gpus = gpus

        def cluster_resources(self):
            return {"GPU": self.gpus, "CPU": 32}

    kind, options, slots = _task_resources(FakeRay(2), "auto", None, 4)
    assert (kind, options, slots) == ("cuda", {"num_gpus": 0.25, "num_cpus": 1}, 8)
    assert _task_resources(FakeRay(2), "auto", None)[1]["num_gpus"] == 1
    with pytest.raises(EchobenchError, match="needs GPUs in the Ray cluster"):
        _task_resources(FakeRay(0), "auto", None, 2)


@pytest.mark.parametrize("args, expected", [
    (["--cells-per-gpu", "0"], "--cells-per-gpu must be auto or an integer from 1 to 16"),
    (["--cells-per-gpu", "two"], "--cells-per-gpu must be auto or an integer"),
    (["--cells-per-gpu", "2", "--workers", "3", "--device", "cpu"], "--workers 3 contradicts --cells-per-gpu 2"),
    (["--cells-per-gpu", "auto", "--workers", "2"], "contradicts --cells-per-gpu auto"),
])
def test_bad_cells_per_gpu_options_get_a_message(args, expected, tmp_path, cli):
    code, _, err = cli("run", "--suite", "smoke", "--out", tmp_path / "o", "--no-progress", *args)
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
