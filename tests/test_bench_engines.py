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


def test_a_failing_engine_is_an_error_row_and_the_rest_is_kept(cli, tmp_path, monkeypatch):
    """An engine that breaks (here: its load raises) becomes an "error" row; the rows after it still
    run, --out holds every row, and the exit status says something failed."""
    pytest.importorskip("diffusers")
    from echobench.engines.eager.engine import EagerEngine

    calls = []

    def broken_load(self, components):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("kernel exploded")
        return original(self, components)

    original = EagerEngine.load
    monkeypatch.setattr(EagerEngine, "load", broken_load)
    out = tmp_path / "bench.json"
    code, _, err = cli("bench", "engines", "--engines", "eager", "--batch-sizes", "1", "2", "--steps", "2",
                       "--json", "--out", out)
    assert code == 1 and "eager 1: RuntimeError: kernel exploded" in err
    doc = json.loads(out.read_text())
    assert doc["complete"] is True
    assert doc["rows"]["eager"]["1"] == {"error": "RuntimeError: kernel exploded"}
    assert doc["rows"]["eager"]["2"]["images_per_s"] > 0  # the next batch size still ran


def test_bench_engines_out_is_written_as_it_goes(monkeypatch, tmp_path):
    """Every row rewrites the file (atomically): a run cut short keeps what it measured."""
    pytest.importorskip("diffusers")
    from echobench.bench.engines import bench_engines

    seen = []
    doc = bench_engines(engines=("eager",), batch_sizes=(1,), steps=2,
                        progress=lambda d: seen.append((d["complete"], sorted(d["rows"]))))
    assert seen[0] == (False, ["diffusers-pipeline"])  # the reference row before any engine ran
    assert seen[-1] == (True, ["diffusers-pipeline", "eager"]) and doc["complete"]


def test_a_row_that_fuses_attention_leaves_the_next_row_unfused(monkeypatch):
    """Rows share the modules and fuse_qkv changes them in place: each row must start unfused."""
    pytest.importorskip("diffusers")
    from echobench.bench.engines import bench_engines
    from echobench.engines.eager.engine import EagerEngine

    seen = []
    original = EagerEngine.load

    def spy(self, components):
        seen.append({type(p).__name__ for p in components.controlnet.attn_processors.values()})
        return original(self, components)

    monkeypatch.setattr(EagerEngine, "load", spy)
    rows = ("eager[fuse_qkv=true]", "eager")
    doc = bench_engines(engines=rows, batch_sizes=(1,), steps=2)
    assert seen == [{"AttnProcessor2_0"}, {"AttnProcessor2_0"}]
    assert all(doc["rows"][row]["1"]["parity_max_abs"] < 1e-5 for row in rows)


def test_bench_engines_with_an_approximate_tiny_vae(cli, tmp_path):
    """--vae swaps the decoder of every row, the stock pipeline's included (as diffusers' documentation
    does with `pipe.vae = AutoencoderTiny...`): the rows still agree with each other."""
    diffusers = pytest.importorskip("diffusers")
    diffusers.AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                              num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1)).save_pretrained(tmp_path / "taesd")
    code, out, err = cli("bench", "engines", "--engines", "eager", "--batch-sizes", "1", "--steps", "2",
                         "--vae", tmp_path / "taesd")
    assert code == 0, err
    assert f"approximate tiny VAE {tmp_path / 'taesd'}" in out
    code, out, err = cli("bench", "engines", "--engines", "eager", "--batch-sizes", "1", "--steps", "2", "--json",
                         "--vae", tmp_path / "taesd")
    assert json.loads(out)["rows"]["eager"]["1"]["parity_max_abs"] < 1e-5


def test_bench_engines_bad_input(cli):
    code, _, err = cli("bench", "engines", "--batch-sizes", "0")
    assert code == 2 and "positive" in err and "Traceback" not in err
    for row, message in [("compile[vea=true]", "vea"), ("compile[compile_vae]", "not option=value"),
                         ("compile[compile_vae=true", "NAME[option=value"), ("compile[inductor_flags=fast]", "fast"),
                         ("compile[vae=true]", "compile_vae")]:
        code, _, err = cli("bench", "engines", "--engines", row)
        assert code == 2 and message in err and "Traceback" not in err, (row, err)


@pytest.mark.slow  # 27 s: three compiled rows of the tiny model; tests/test_engines.py checks the mechanism on toy modules
def test_each_compile_row_builds_its_own_graphs():
    """Rows are independent of their order: timing nothing, each compile row's build says how many
    graphs were compiled for it. The second row has the very settings of the first (spelt
    differently): it used to run the first row's graph and report a compile time of ~0 s."""
    pytest.importorskip("diffusers")
    from echobench.bench.engines import bench_engines

    rows = ("compile[backend=aot_eager]", "compile[backend=aot_eager,fullgraph=true]",
            "compile[backend=aot_eager,compile_vae=true]")
    doc = bench_engines(engines=rows, batch_sizes=(1,), steps=1)
    builds = [doc["rows"][row]["1"]["build"] for row in rows]
    assert [b["graphs"] for b in builds] == [1, 1, 2]  # step; step; step + decode
    assert all(b["compile_seconds"] > 0 for b in builds)
    assert all(doc["rows"][row]["1"]["parity_max_abs"] < 1e-5 for row in rows)


def test_engine_rows_with_options():
    from echobench.bench.engines import parse_row

    assert parse_row("compile") == ("compile", {})
    assert parse_row("compile[compile_vae=true, mode=max-autotune]") == \
        ("compile", {"compile_vae": "true", "mode": "max-autotune"})
    assert parse_row("eager[]") == ("eager", {})


@pytest.mark.bench
@pytest.mark.parametrize("row", ["reference", "eager", "onnxruntime"])
def test_tiny_generation_speed(benchmark, row):
    """pytest-benchmark rows for CI comparison: one batch of 4 tiny images, 20 steps, CFG."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    import torch
    from PIL import Image

    from echobench.bench.engines import reference_pipeline
    from echobench.echoalign.diffusion_configs import build_components
    from echobench.echoalign.diffusion import DiffusionConfig, DiffusionEchoMod, control_images, make_engine
    from echobench.engines.step_shapes import StepShapes

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
