"""GPU checks (marker `gpu`: `tox -e gpu`, and step `tests` of scripts/gpu_check.sh), on the tiny model.

The CPU tests (tests/test_engines.py) hold every engine to 1e-5 of eager in float32. On a GPU the
engines run in float16 by default, where one rounding step of a value near 1 is 2^-11 ≈ 4.9e-4 and
kernels that fuse or reorder operations (inductor, cuDNN's algorithm choice) round differently, so
the tolerances here are looser and stated per check:

- EchoMod's eager engine against diffusers' stock `StableDiffusionControlNetPipeline`, both in float32
  on the GPU: the same modules and kernels, so pixels within PIPELINE_PIXEL_ATOL = 1e-3 (TF32
  convolutions, which cuDNN allows by default, round the same in both).
- float16 on the GPU against float32 on the CPU, one denoising step: within HALF_NOISE_ATOL = 2e-2 of
  noise predictions of magnitude ≈ 1 (about 40 float16 rounding steps).
- compile (inductor with CUDA graphs, the GPU default), eager with fused attention projections and the
  GPU providers against eager, all float16:
  one step within HALF_NOISE_ATOL; 20-step images within HALF_PIXEL_ATOL = 5e-2 at worst and
  HALF_PIXEL_MEAN = 5e-3 on average ([0, 1] pixels: one uint8 level is 3.9e-3).

Each test records the differences it measured as junit properties (`record_property`), so the GPU
check's XML holds the numbers, not only pass/fail.
"""

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from echobench.echoalign.diffusion import make_diffusion_modifier  # noqa: E402
from echobench.echoalign.diffusion_configs import TINY_RESOLUTION, build_components  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to torch")]

PIPELINE_PIXEL_ATOL = 1e-3
HALF_NOISE_ATOL = 2e-2
HALF_PIXEL_ATOL = 5e-2
HALF_PIXEL_MEAN = 5e-3
CLASS_NAMES = ["cat", "aquarium_fish"]
SIZE = 16


def components(dtype: str, device: str = "cuda"):
    return build_components("tiny", seed=0, device=device, dtype=dtype)


def modifier(engine: str, comps, dtype: str, device: str = "cuda", **options):
    return make_diffusion_modifier(engine, "cifar10", CLASS_NAMES, SIZE,
                                   {"model": "tiny", "batch_size": 2, "dtype": dtype, **options}, device,
                                   components=comps)


def inputs(n: int = 2):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    return images, np.arange(n) % len(CLASS_NAMES), np.array([11, 2**62 + 5, 7][:n])


def step(echomod, device, dtype):
    """One denoising step's inputs for 2 images × (unconditional, conditional) rows."""
    g = torch.Generator().manual_seed(1)
    uncond = echomod.prompts.unconditional()
    text = torch.cat([uncond, uncond, *(echomod.prompts.conditional(y) for y in (0, 1))])
    side = TINY_RESOLUTION // 2 ** (len(echomod.components.vae.config.block_out_channels) - 1)  # latent side
    latents = torch.randn(4, 4, side, side, generator=g)
    control = (torch.rand(4, 3, TINY_RESOLUTION, TINY_RESOLUTION, generator=g) > 0.8).float()
    return (latents.to(device, dtype), torch.tensor(961, device=device), text.to(device, dtype),
            control.to(device, dtype), 1.0)


def noise(echomod, args):
    with torch.inference_mode():
        return echomod.engine.denoise(*args).float().cpu()


@pytest.fixture(scope="module")
def half_reference():
    """eager, float16 on the GPU: noise of one step and pixels of two images."""
    comps = components("float16")
    eager = modifier("eager", comps, "float16")
    args = step(eager, "cuda", torch.float16)
    images, labels, seeds = inputs()
    return {"components": comps, "args": args, "noise": noise(eager, args),
            "pixels": eager.generate_pixels(images, labels, seeds)}


def check_half(echomod, reference, record_property):
    diff_noise = (noise(echomod, reference["args"]) - reference["noise"]).abs().max().item()
    images, labels, seeds = inputs()
    diff = np.abs(echomod.generate_pixels(images, labels, seeds) - reference["pixels"])
    record_property("noise_max_abs", diff_noise)
    record_property("pixels_max_abs", float(diff.max()))
    record_property("pixels_mean_abs", float(diff.mean()))
    assert diff_noise <= HALF_NOISE_ATOL
    assert diff.max() <= HALF_PIXEL_ATOL and diff.mean() <= HALF_PIXEL_MEAN


def test_eager_matches_the_stock_pipeline_on_the_gpu(record_property):
    from PIL import Image

    from echobench.bench.engines import reference_pipeline
    from echobench.echoalign.diffusion import control_images, prompt_for

    comps = components("float32")
    eager = modifier("eager", comps, "float32")
    images, labels, seeds = inputs()
    ours = eager.generate_pixels(images, labels, seeds)
    s = eager.settings
    pipe = reference_pipeline(comps, s)
    control = control_images(images, s.resolution, s.canny_low, s.canny_high)
    theirs = pipe([prompt_for(s.prompt_template, CLASS_NAMES[y]) for y in labels],
                  image=[Image.fromarray((c.transpose(1, 2, 0) * 255).round().astype(np.uint8)) for c in control],
                  num_inference_steps=s.steps, guidance_scale=s.guidance_scale,
                  controlnet_conditioning_scale=s.controlnet_conditioning_scale,
                  generator=[torch.Generator("cpu").manual_seed(int(x)) for x in seeds], output_type="np").images
    diff = float(np.abs(ours - theirs).max())
    record_property("pixels_max_abs", diff)
    assert ours.shape == theirs.shape
    assert diff <= PIPELINE_PIXEL_ATOL
    assert np.abs(ours[0] - ours[1]).max() > 100 * PIPELINE_PIXEL_ATOL  # not vacuous


def test_half_precision_on_the_gpu_matches_float32_on_the_cpu(half_reference, record_property):
    cpu = modifier("eager", components("float32", "cpu"), "float32", "cpu")
    args = tuple(a.to("cpu", torch.float32) if torch.is_tensor(a) and a.is_floating_point() else
                 (a.cpu() if torch.is_tensor(a) else a) for a in half_reference["args"])
    diff = (noise(cpu, args) - half_reference["noise"]).abs().max().item()
    record_property("noise_max_abs", diff)
    assert diff <= HALF_NOISE_ATOL
    assert half_reference["noise"].abs().max().item() > 10 * HALF_NOISE_ATOL  # not vacuous


def test_eager_runs_in_half_precision_on_the_gpu(half_reference):
    """float16 by default; channels_last only when asked (engines/eager/config.py says why)."""
    eager = modifier("eager", half_reference["components"], "float16", channels_last="true")
    weight = eager.components.unet.conv_in.weight
    assert weight.dtype == torch.float16 and weight.is_cuda
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert eager.config()["engine_config"]["channels_last"] is True


def test_compile_with_cuda_graphs_matches_eager(half_reference, record_property):
    compiled = modifier("compile", half_reference["components"], "float16")
    config = compiled.config()["engine_config"]
    assert config["mode"] == "reduce-overhead" and config["backend"] == "inductor"  # CUDA graphs
    assert config["compile_vae"] is True  # the decode is compiled too on a GPU
    record_property("compile_seconds", compiled.engine.build_info.get("compile_seconds"))
    with torch._dynamo.config.patch(error_on_recompile=True):  # not monkeypatch: see tests/test_engines.py
        check_half(compiled, half_reference, record_property)
        images, labels, seeds = inputs(3)  # batches of 2 and 1 (padded): the same graph, no recompile
        assert compiled.generate(images, labels, seeds).shape == images.shape


def test_fused_attention_projections_match_eager(half_reference, record_property):
    """fuse_qkv=true in float16, on modules of its own (the engine fuses them in place)."""
    fused = modifier("eager", components("float16"), "float16", fuse_qkv="true")
    check_half(fused, half_reference, record_property)
    assert {type(p).__name__ for p in fused.components.controlnet.attn_processors.values()} == {"FusedAttnProcessor2_0"}


def test_onnxruntime_gpu_provider_matches_eager(half_reference, record_property, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")  # the default (dynamo) exporter needs it
    if not {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()):
        pytest.skip("onnxruntime has no GPU execution provider here (onnxruntime-gpu is not installed)")
    engine = modifier("onnxruntime", half_reference["components"], "float16", provider="cuda",
                      cache_dir=str(tmp_path))
    assert engine.engine.provider == "cuda"
    check_half(engine, half_reference, record_property)


def test_tensorrt_matches_eager(half_reference, record_property, tmp_path):
    pytest.importorskip("tensorrt")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")  # the default (dynamo) exporter needs it: skip, not fail, without it
    engine = modifier("tensorrt", half_reference["components"], "float16", cache_dir=str(tmp_path))
    check_half(engine, half_reference, record_property)


def test_bench_engines_on_the_gpu(capsys):
    """The bench's GPU path: CUDA peak memory, parity against the stock pipeline, a speed ratio."""
    from echobench.bench.engines import bench_engines

    doc = bench_engines(config="tiny", engines=("eager",), batch_sizes=(2,), steps=4, device="cuda")
    row = doc["rows"]["eager"]["2"]
    assert doc["dtype"] == "float16" and doc["complete"]
    assert row["peak_kind"] == "cuda max_memory_allocated" and row["peak_mib"] > 0
    assert row["parity_max_abs"] <= HALF_PIXEL_ATOL
    assert doc["speedup_vs_reference"]["eager"]["2"] > 0


def test_bench_train_uses_mixed_precision_and_channels_last_on_the_gpu():
    from echobench.bench.train import bench_train

    doc = bench_train(n=512, device="cuda", warmup_steps=1)
    assert doc["images_per_s"] > 0
    assert doc["precision"] == "bf16 autocast" and doc["channels_last"] is True, doc


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-m", "gpu", "-v"]))
