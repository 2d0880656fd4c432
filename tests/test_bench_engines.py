"""`echobench bench engines`: the reference row, engine rows, parity, and the bench-marker comparisons."""

import json

import pytest


def test_bench_engines_reports_reference_and_engine_rows(cli):
    pytest.importorskip("diffusers")
    # onnxruntime's and compile's parity are tested in test_engines.py; their export or compilation
    # would double this test's time, so the timed rows here are the reference and eager.
    code, out, err = cli("bench", "engines", "--engines", "eager", "tensorrt", "eagre",
                         "--batch-sizes", "2", "--steps", "3", "--json")
    assert code == 0, err
    doc = json.loads(out)
    rows = doc["rows"]
    assert set(rows) == {"diffusers-pipeline", "eager", "tensorrt", "eagre"}
    assert "echobench[tensorrt]" in rows["tensorrt"]["unavailable"]  # no TensorRT here: reported, not fatal
    assert "eager" in rows["eagre"]["unavailable"]  # a misspelt engine: did you mean
    for name in ("diffusers-pipeline", "eager"):
        r = rows[name]["2"]
        assert r["images_per_s"] > 0 and r["seconds_per_step"] > 0 and r["peak_mib"] > 0
    # same components, scheduler, seeds and inputs as diffusers' own pipeline: the outputs agree
    assert rows["eager"]["2"]["parity_max_abs"] < 1e-5
    assert set(doc["speedup_vs_reference"]) == {"eager"}


def test_bench_engines_bad_input(cli):
    code, _, err = cli("bench", "engines", "--batch-sizes", "0")
    assert code == 2 and "positive" in err and "Traceback" not in err


@pytest.mark.bench
@pytest.mark.parametrize("row", ["reference", "eager", "onnxruntime"])
def test_tiny_generation_speed(benchmark, row):
    """pytest-benchmark rows for CI comparison: one batch of 4 tiny images, 20 steps, CFG."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    import torch
    from PIL import Image

    from echobench.bench_engines import reference_pipeline
    from echobench.diffusion_models import build_components
    from echobench.echomod_diffusion import DiffusionConfig, DiffusionEchoMod, control_images, make_engine
    from engines.shapes import StepShapes

    components = build_components("tiny", random_init=True)
    settings = DiffusionConfig(resolution=32, batch_size=4)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    labels, seeds = rng.integers(0, 10, 4), rng.integers(0, 2**62, 4)
    names = [f"class {i}" for i in range(10)]
    if row == "reference":
        pipe = reference_pipeline(components, settings)
        control = [Image.fromarray((c.transpose(1, 2, 0) * 255).astype(np.uint8))
                   for c in control_images(images, 32, 75, 75)]

        def run():
            return pipe([f"a photo of {names[y]}" for y in labels], image=control, num_inference_steps=20,
                        generator=[torch.Generator().manual_seed(int(s)) for s in seeds], output_type="np")
    else:
        shapes = StepShapes.for_components(components, 32, 4, True)
        echomod = DiffusionEchoMod(names, 32, components, make_engine(row, "cpu", "auto", shapes=shapes), settings)

        def run():
            return echomod.generate_pixels(images, labels, seeds)
    run()  # warm-up (export / session creation)
    benchmark.pedantic(run, rounds=3, iterations=1)
