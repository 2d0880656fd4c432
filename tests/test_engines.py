"""The EchoMod engines (`engines/`) against the eager reference, on the tiny model (nothing downloaded).

Parity is checked twice: on one denoising step (the noise prediction of 4 rows, |noise| ≤ 1.23) and
on whole images (`generate_pixels`, 20 UniPC steps with guidance 7.5, [0, 1] pixels), for a full
batch and for a padded one (one image where the engine was built for two).

Measured (float32 on a CPU, one torch thread; max |engine − eager|):

| engine                        | noise, full | noise, 1 image | pixels, full | pixels, 1 image |
|-------------------------------|-------------|----------------|--------------|-----------------|
| compile, aot_eager backend    | 0           | 0              | 0            | 5.4e-7          |
| compile, inductor (slow test) | 1.4e-6      | 1.3e-6         | 8.3e-7       | 6.9e-7          |
| onnxruntime CPU, dynamo       | 7.7e-7      | 7.5e-7         | 7.2e-7       | 5.4e-7          |
| onnxruntime CPU, torchscript  | 1.3e-6      | 7.2e-7         | 6.6e-7       | 4.8e-7          |

For scale: eager itself gives 7.2e-7 different pixels for an image generated alone rather than in a
batch of two (other matrix shapes, other summation orders). NOISE_ATOL = 1e-5 leaves a 7× margin over
the largest measured difference and is 1e-5 relative to the noise; PIXEL_ATOL = 1e-5 (as in the
pipeline parity test) leaves 12×, 400× below one uint8 level. After rounding to uint8 at most one
pixel value in 6,144 differed, by one level.

Times on this 2-core machine, one thread: export of the tiny fused graph ≈ 15–25 s with the dynamo
exporter, ≈ 2 s with the torchscript one; torch.compile with aot_eager ≈ 5–8 s; with inductor ≈ 100 s
on an empty inductor cache (≈ 9–17 s warm), hence `slow`. TensorRT and the GPU providers are not
installed here: their tests check what needs no runtime (cache keys, messages, profile bounds, the
options a GPU session would get).
"""

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from echobench.echoalign.diffusion_configs import (  # noqa: E402
    DIFFUSION_CONFIGS, SD15_CONTROLNET, SD15_UNET, TINY_RESOLUTION, build_components, default_resolution, parameter_counts,
)
from echobench.echoalign.echomod import ENGINES, make_modifier  # noqa: E402
from echobench.echoalign.diffusion import (  # noqa: E402
    engine_option_defaults, make_diffusion_modifier, make_engine, tiny_components,
)
from echobench.errors import EchobenchError  # noqa: E402
from echobench.engines.export import graph_key, key_digest  # noqa: E402
from echobench.engines.step_shapes import StepShapes, check_rows  # noqa: E402
from echobench.engines.tensorrt.config import TensorRTConfig, find_plan, plan_digest, plan_key, profile_rows  # noqa: E402

NOISE_ATOL = 1e-5  # see the module docstring
PIXEL_ATOL = 1e-5
UINT8_EQUAL_FRACTION = 0.999
CLASS_NAMES = ["cat", "aquarium_fish"]
DATASET_SIZE = 16
OPTIONS = {"model": "tiny", "batch_size": 2}  # 20 UniPC steps, guidance 7.5: the paper's defaults


@pytest.fixture(scope="module")
def components():
    return tiny_components(0)


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("engine-cache"))


def modifier(engine, components, **options):
    return make_diffusion_modifier(engine, "cifar10", CLASS_NAMES, DATASET_SIZE, {**OPTIONS, **options}, "cpu",
                                   components=components)


def inputs(n: int = 2):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, DATASET_SIZE, DATASET_SIZE, 3), dtype=np.uint8)
    return images, np.arange(n) % len(CLASS_NAMES), np.array([11, 2**62 + 5, 7][:n])


def step(eager):
    """One denoising step's inputs: 2 images × (unconditional, conditional) rows."""
    g = torch.Generator().manual_seed(1)
    uncond, cond = eager.prompts.unconditional(), [eager.prompts.conditional(y) for y in (0, 1)]
    text = torch.cat([uncond, uncond, *cond])
    return (torch.randn(4, 4, 16, 16, generator=g), torch.tensor(961), text,
            (torch.rand(4, 3, TINY_RESOLUTION, TINY_RESOLUTION, generator=g) > 0.8).float(), 1.0)


def one_image(args):
    """The step of the first image alone (its unconditional and conditional rows)."""
    latents, t, text, control, scale = args
    rows = [0, 2]
    return latents[rows], t, text[rows], control[rows], scale


@pytest.fixture(scope="module")
def reference(components):
    """Eager noise predictions and pixels (full batch, and the first image alone)."""
    eager = modifier("eager", components)
    args = step(eager)
    images, labels, seeds = inputs()
    with torch.inference_mode():
        noise = eager.engine.denoise(*args)
        noise_one = eager.engine.denoise(*one_image(args))
    return {"args": args, "noise": noise, "noise_one": noise_one,
            "pixels": eager.generate_pixels(images, labels, seeds),
            "pixels_one": eager.generate_pixels(images[:1], labels[:1], seeds[:1])}


def check_parity(echomod, reference):
    """The engine's noise and pixels against eager's, full batch and one image (padded)."""
    args = reference["args"]
    with torch.inference_mode():
        noise = echomod.engine.denoise(*args)
        noise_one = echomod.engine.denoise(*one_image(args))
    assert noise.shape == reference["noise"].shape and noise.dtype == torch.float32
    assert (noise - reference["noise"]).abs().max().item() <= NOISE_ATOL
    assert (noise_one - reference["noise_one"]).abs().max().item() <= NOISE_ATOL
    images, labels, seeds = inputs()
    pixels = echomod.generate_pixels(images, labels, seeds)
    pixels_one = echomod.generate_pixels(images[:1], labels[:1], seeds[:1])
    assert np.abs(pixels - reference["pixels"]).max() <= PIXEL_ATOL
    assert np.abs(pixels_one - reference["pixels_one"]).max() <= PIXEL_ATOL
    ours8, theirs8 = (np.round(p * 255).astype(int) for p in (pixels, reference["pixels"]))
    assert np.abs(ours8 - theirs8).max() <= 1 and (ours8 == theirs8).mean() >= UINT8_EQUAL_FRACTION


def test_parity_is_not_vacuous(reference):
    """The tolerances are far below what a wrong input would change."""
    assert reference["noise"].abs().max().item() > 1e4 * NOISE_ATOL
    assert np.abs(reference["pixels"][0] - reference["pixels"][1]).max() > 1e4 * PIXEL_ATOL


# ------------------------------------------------------------------------------------------ compile


@pytest.fixture(scope="module")
def compile_modifier(components):
    """aot_eager traces the fused step exactly as inductor does (full graph, fixed shapes) without
    generating code."""
    return modifier("compile", components, backend="aot_eager")


def test_compile_matches_eager_without_recompiling(compile_modifier, reference):
    """A padded last batch must reuse the one compiled graph: recompiling is made an error.

    `config.patch`, not pytest's monkeypatch: torch keeps config overrides in context variables, and
    a monkeypatched value, once restored, makes dynamo's next recompile (another test's) fail to read it."""
    assert compile_modifier.engine.build_info["rows"] == 4
    assert compile_modifier.config()["engine_config"]["mode"] == "default"
    with torch._dynamo.config.patch(error_on_recompile=True):
        check_parity(compile_modifier, reference)
        images, labels, seeds = inputs(3)
        out = compile_modifier.generate(images, labels, seeds)  # batches of 2 and 1 (padded)
    assert out.shape == images.shape and out.dtype == np.uint8


@pytest.mark.slow  # 12 s; test_compile_matches_eager_without_recompiling covers the compile path by default
def test_compile_with_the_vae_compiled_matches_eager(components, reference):
    """compile_vae=true: the decode is compiled too, padded to the full batch like the step."""
    compiled = modifier("compile", components, backend="aot_eager", compile_vae="true")
    assert compiled.config()["engine_config"]["compile_vae"] is True
    check_parity(compiled, reference)


def test_compile_options_are_checked():
    from echobench.engines.compile.config import CompileConfig

    with pytest.raises(EchobenchError, match="unknown inductor_flags"):
        CompileConfig(inductor_flags="fast")
    with pytest.raises(EchobenchError, match="needs backend inductor"):
        CompileConfig(backend="aot_eager", inductor_flags="diffusers")
    resolved = CompileConfig(inductor_flags="diffusers").resolve("cuda")
    assert resolved.compile_vae and resolved.inductor_flags == "diffusers" and resolved.cuda_graphs
    assert CompileConfig().resolve("cpu").compile_vae is False
    assert CompileConfig(compile_vae=True).resolve("cpu").compile_vae is True


@pytest.mark.parametrize("engine, options", [
    ("eager", {}),
    pytest.param("compile", {"backend": "aot_eager"}, marks=pytest.mark.slow),  # 10 s; compile parity runs by default
])
def test_fused_attention_projections_match_eager(engine, options, reference):
    """fuse_qkv=true: one projection matmul per attention layer, on modules of their own (the engine
    fuses in place); unfusing gives the modules back their own attention processors."""
    from echobench.engines.base import unfuse_qkv_projections

    own = tiny_components(0)
    before = {name: type(p).__name__ for net in (own.unet, own.controlnet) for name, p in net.attn_processors.items()}
    fused = modifier(engine, own, fuse_qkv="true", **options)
    assert fused.config()["engine_config"]["fuse_qkv"] is True
    check_parity(fused, reference)
    assert {type(p).__name__ for p in own.unet.attn_processors.values()} == {"FusedAttnProcessor2_0"}
    assert {type(p).__name__ for p in own.controlnet.attn_processors.values()} == {"FusedAttnProcessor2_0"}
    unfuse_qkv_projections(own)
    assert {name: type(p).__name__ for net in (own.unet, own.controlnet) for name, p in net.attn_processors.items()} == before
    assert "fuse_qkv" not in modifier("eager", own).config()["engine_config"]  # older cache keys stay valid


@pytest.mark.slow
def test_compile_with_inductor_matches_eager(components, reference):
    """The default CPU backend; ≈ 100 s to compile on one thread with an empty inductor cache."""
    echomod = modifier("compile", components)
    assert echomod.config()["engine_config"]["backend"] == "inductor"
    check_parity(echomod, reference)


def test_compile_settings():
    from echobench.engines.compile.config import CompileConfig

    assert CompileConfig().resolve("cuda").mode == "reduce-overhead"  # CUDA graphs on a GPU
    assert CompileConfig().resolve("cpu").mode == "default"
    assert CompileConfig(backend="aot_eager").resolve("cuda").mode == "default"
    with pytest.raises(EchobenchError, match="CUDA graphs"):
        CompileConfig(mode="reduce-overhead").resolve("cpu")
    with pytest.raises(EchobenchError, match="unknown mode"):
        CompileConfig(mode="fast")


# ------------------------------------------------ compile: each engine compiles its own graphs (issue 19)


class _ToyControlNet(torch.nn.Module):
    """The ControlNet's call signature on one 1×1 convolution: compiles in a fraction of a second."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1)

    def forward(self, sample, timestep, encoder_hidden_states=None, controlnet_cond=None, conditioning_scale=1.0,
                guess_mode=False, return_dict=False):
        residual = self.conv(sample) * conditioning_scale + controlnet_cond.mean() + encoder_hidden_states.mean()
        return [residual], residual


class _ToyUNet(torch.nn.Module):
    config = types.SimpleNamespace(in_channels=4)

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1)

    @property
    def device(self):
        return self.conv.weight.device

    @property
    def dtype(self):
        return self.conv.weight.dtype

    def forward(self, sample, timestep, encoder_hidden_states=None, down_block_additional_residuals=(),
                mid_block_additional_residual=None, return_dict=False):
        out = self.conv(sample) + down_block_additional_residuals[0] + mid_block_additional_residual
        return (out + timestep.reshape(-1, 1, 1, 1) * 0,)


class _ToyVAE(torch.nn.Module):
    config = types.SimpleNamespace(scaling_factor=1.0)

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 3, 1)

    def decode(self, latents, return_dict=False):
        return (self.conv(latents),)


TOY_SHAPES = StepShapes(batch_size=2, rows_per_image=2, latent_channels=4, latent_size=8, text_length=4, text_dim=8,
                        control_channels=3, control_size=8)


def toy_components():
    from echobench.engines.base import Components

    torch.manual_seed(0)
    return Components(unet=_ToyUNet().eval(), controlnet=_ToyControlNet().eval(), vae=_ToyVAE().eval(),
                      text_encoder=None, tokenizer=None, scheduler=None)


def toy_engine(components, **options):
    engine = make_engine("compile", "cpu", shapes=TOY_SHAPES, options=options)
    engine.load(components)
    return engine


@pytest.fixture
def recorded_inductor(monkeypatch):
    """inductor's backend with its code generation replaced by the traced graph itself: every graph
    dynamo hands to inductor is recorded with the options it was compiled with, in milliseconds."""
    import torch._inductor.compile_fx as compile_fx

    compiled = []

    def record(model, inputs, config_patches=None, **kwargs):
        compiled.append(dict(config_patches or {}))
        return model

    monkeypatch.setattr(compile_fx, "compile_fx", record)
    return compiled


def test_two_compile_engines_with_different_settings_both_compile(recorded_inductor):
    """Three engines in one process on the same modules: each compiles its own graph, with its own
    inductor options (dynamo used to hand the second and third engine the first one's graph)."""
    components = toy_components()
    engines = [toy_engine(components), toy_engine(components, inductor_flags="diffusers"), toy_engine(components)]
    assert len(recorded_inductor) == 3
    assert "conv_1x1_as_mm" not in recorded_inductor[0] and "conv_1x1_as_mm" not in recorded_inductor[2]
    assert recorded_inductor[1]["conv_1x1_as_mm"] is True and recorded_inductor[1]["epilogue_fusion"] is False
    assert [e.build_info["graphs"] for e in engines] == [1, 1, 1]
    assert engines[1].build_info["inductor_options"]["coordinate_descent_tuning"] is True
    with_vae = toy_engine(components, compile_vae="true")
    assert len(recorded_inductor) == 5 and with_vae.build_info["graphs"] == 2  # step + decode, its own
    # Running an engine again compiles nothing more (its graph is found in its own cache).
    inputs = example_step(TOY_SHAPES, 4)
    engines[0].denoise(*inputs)
    assert len(recorded_inductor) == 5


def example_step(shapes, rows):
    from echobench.engines.fused import example_inputs

    x = example_inputs(shapes, rows, "cpu", torch.float32)
    return x["sample"], x["timestep"][0], x["encoder_hidden_states"], x["controlnet_cond"], 1.0


def test_compile_engines_with_the_same_settings_do_not_share_graphs():
    """aot_eager (no code generation): an engine's graphs live on its own code objects; another
    engine with the very same settings compiles its own, and closing one leaves the other working."""
    components = toy_components()
    first, second = toy_engine(components, backend="aot_eager"), toy_engine(components, backend="aot_eager")
    assert first.build_info["graphs"] == second.build_info["graphs"] == 1
    assert first._step.__code__ is not second._step.__code__
    inputs = example_step(TOY_SHAPES, 4)
    expected = first.denoise(*inputs)
    first.close()
    assert first.compiled is None and first._step is None
    assert torch.equal(second.denoise(*inputs), expected)


def _live_graph_modules() -> int:
    import gc

    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.fx.GraphModule))


def test_close_releases_the_compiled_graphs():
    """build → close → rebuild, many times in one process (the out-of-memory retry rebuilds the
    engine at a smaller batch): the live compiled graphs and the gc-tracked objects stay bounded,
    and the engine module's globals gain no compiled functions."""
    import gc

    import echobench.engines.compile.engine as compile_engine

    components = toy_components()
    toy_engine(components, backend="aot_eager", compile_vae="true").close()  # imports, first-time caches
    gc.collect()
    graphs_before, objects_before = _live_graph_modules(), len(gc.get_objects())
    globals_before = set(vars(compile_engine))
    for _ in range(4):
        engine = toy_engine(components, backend="aot_eager", compile_vae="true")
        assert engine.build_info["graphs"] == 2 and _live_graph_modules() > graphs_before
        engine.close()
        del engine
    assert _live_graph_modules() <= graphs_before
    # What torch itself keeps per compilation (linecache entries of generated code, finalizers on the
    # live parameters) is a few hundred small objects; the graphs, before close() released them,
    # left ≈ 2,200 per build.
    assert len(gc.get_objects()) < objects_before + 4 * 1000
    assert set(vars(compile_engine)) == globals_before


# -------------------------------------------------------------------------------------- onnxruntime


@pytest.fixture(scope="module")
def onnx_modifier(components, engine_cache):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    return modifier("onnxruntime", components, cache_dir=engine_cache)


@pytest.mark.slow  # the export takes ~25 s; test_onnx_graph_is_reused_and_rebuilt_when_its_key_changes runs the engine by default
@pytest.mark.onnx
def test_onnxruntime_matches_eager(onnx_modifier, reference):
    """The default exporter (dynamo) and the CPU provider, on one thread like torch."""
    info = onnx_modifier.engine.build_info
    assert info["provider"] == "cpu" and not info["onnx_reused"] and info["export_seconds"] > 0
    assert onnx_modifier.engine.session.get_session_options().intra_op_num_threads == torch.get_num_threads()
    assert onnx_modifier.config()["engine_config"] == {"name": "onnxruntime", "provider": "cpu",
                                                      "exporter": "dynamo", "opset": 18}
    check_parity(onnx_modifier, reference)


@pytest.mark.onnx
def test_onnx_graph_is_reused_and_rebuilt_when_its_key_changes(onnx_modifier, components, engine_cache,
                                                                monkeypatch):
    import echobench.engines.export as export

    exports = []
    real_export = export._export
    monkeypatch.setattr(export, "_export", lambda *a, **k: exports.append(a[3]) or real_export(*a, **k))
    first = onnx_modifier.engine.build_info
    again = modifier("onnxruntime", components, cache_dir=engine_cache).engine.build_info
    assert exports == [] and again["onnx_reused"] and again["export_seconds"] == 0
    assert again["onnx_path"] == first["onnx_path"]
    # Another exporter, and other weights: new keys, new exports (torchscript: ~2 s each).
    other_exporter = modifier("onnxruntime", components, cache_dir=engine_cache, exporter="torchscript")
    other_weights = modifier("onnxruntime", tiny_components(1), cache_dir=engine_cache, exporter="torchscript")
    infos = [e.engine.build_info for e in (other_exporter, other_weights)]
    assert exports == ["torchscript", "torchscript"] and not any(i["onnx_reused"] for i in infos)
    assert len({first["onnx_path"], *(i["onnx_path"] for i in infos)}) == 3
    # The torchscript graph runs the same step.
    args = step(onnx_modifier)
    with torch.inference_mode():
        a, b = onnx_modifier.engine.denoise(*args), other_exporter.engine.denoise(*args)
    assert (a - b).abs().max().item() <= NOISE_ATOL
    meta = json.loads((Path(first["onnx_path"]).parent / "meta.json").read_text())
    assert meta["torch"] == torch.__version__ and meta["opset"] == 18 and meta["dtype"] == "float32"


def test_onnx_key_covers_shapes_dtype_opset_and_torch(components, monkeypatch):
    pytest.importorskip("onnxscript")
    shapes = StepShapes.for_components(components, TINY_RESOLUTION, 2, guidance=True)
    base = graph_key("model-digest", shapes, "float32", "cpu", 18, "dynamo")
    variants = [
        graph_key("other-digest", shapes, "float32", "cpu", 18, "dynamo"),
        graph_key("model-digest", StepShapes.for_components(components, 64, 2, True), "float32", "cpu", 18, "dynamo"),
        graph_key("model-digest", shapes, "float16", "cpu", 18, "dynamo"),
        graph_key("model-digest", shapes, "float32", "cpu", 17, "dynamo"),
    ]
    monkeypatch.setattr(torch, "__version__", "0.0-other")
    variants.append(graph_key("model-digest", shapes, "float32", "cpu", 18, "dynamo"))
    digests = {key_digest(k) for k in [base, *variants]}
    assert len(digests) == 6
    # The batch size is not part of it: the graph's batch axis is dynamic.
    monkeypatch.undo()
    bigger = StepShapes.for_components(components, TINY_RESOLUTION, 8, guidance=True)
    assert key_digest(graph_key("model-digest", bigger, "float32", "cpu", 18, "dynamo")) == key_digest(base)


def test_onnxruntime_provider_choice(components, engine_cache):
    pytest.importorskip("onnxruntime")
    with pytest.raises(EchobenchError, match="onnxruntime-gpu"):
        modifier("onnxruntime", components, provider="tensorrt", cache_dir=engine_cache)
    with pytest.raises(EchobenchError, match="unknown provider"):
        modifier("onnxruntime", components, provider="directml")


def test_onnxruntime_gpu_providers_and_their_caches(components, tmp_path, monkeypatch):
    """What a GPU session would be given, checked with a stand-in for onnxruntime-gpu's provider list:
    TensorRT first (engine and timing caches on, one profile from one image to a full batch, FP16
    for a float16 graph), then CUDA, then the CPU."""
    import echobench.engines.onnxruntime.config as ort_config
    from echobench.engines.onnxruntime.config import OnnxRuntimeConfig
    from echobench.engines.onnxruntime.engine import OnnxRuntimeEngine

    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    gpu_ort = types.SimpleNamespace(get_available_providers=lambda: gpu)
    shapes = StepShapes.for_components(components, TINY_RESOLUTION, 4, guidance=True)
    engine = OnnxRuntimeEngine(OnnxRuntimeConfig(cache_dir=str(tmp_path)), shapes, "cuda:0")
    assert engine.settings.providers("cuda:0", gpu, tensorrt_libraries=True) == ["tensorrt", "cuda", "cpu"]
    assert engine.settings.providers("cuda:0", gpu, tensorrt_libraries=False) == ["cuda", "cpu"]
    options = engine._provider_options("tensorrt", "graphkey", torch.float16)
    assert options["trt_engine_cache_enable"] and options["trt_timing_cache_enable"] and options["trt_fp16_enable"]
    assert options["trt_engine_cache_path"] == str(tmp_path / "onnxruntime-tensorrt" / "graphkey")
    assert options["trt_profile_min_shapes"] == \
        "sample:2x4x16x16,encoder_hidden_states:2x77x32,controlnet_cond:2x3x32x32"
    assert options["trt_profile_max_shapes"] == options["trt_profile_opt_shapes"] == \
        "sample:8x4x16x16,encoder_hidden_states:8x77x32,controlnet_cond:8x3x32x32"
    assert engine._provider_options("cuda", "graphkey", torch.float16) == {"device_id": 0}
    assert OnnxRuntimeConfig(provider="tensorrt").providers("cuda:0", gpu, True) == ["tensorrt", "cuda", "cpu"]
    with pytest.raises(EchobenchError, match="libnvinfer.*provider=cuda"):
        OnnxRuntimeConfig(provider="tensorrt").providers("cuda:0", gpu, tensorrt_libraries=False)
    cpu_only = types.SimpleNamespace(get_available_providers=lambda: ["CPUExecutionProvider"])
    monkeypatch.setitem(sys.modules, "onnxruntime", cpu_only)  # a GPU device without a GPU provider
    monkeypatch.setitem(sys.modules, "onnx", types.ModuleType("onnx"))
    monkeypatch.setattr(ort_config, "tensorrt_libraries", lambda: True)
    with pytest.raises(EchobenchError, match=r"no CUDA or TensorRT execution provider.*onnx-gpu"):
        engine._providers(cpu_only)
    with pytest.raises(EchobenchError, match="no CUDA or TensorRT execution provider"):
        make_engine("onnxruntime", "cuda:0", shapes=shapes).require_runtime("cuda:0")
    OnnxRuntimeEngine.require_runtime("cpu")  # the CPU provider is what a CPU device runs
    monkeypatch.setitem(sys.modules, "onnxruntime", gpu_ort)
    with pytest.raises(EchobenchError, match="needs a CUDA device"):
        OnnxRuntimeEngine(OnnxRuntimeConfig(provider="cuda"), shapes, "cpu")._providers(gpu_ort)


class _StandInC:
    """onnxruntime-gpu's C layer as its Python wrapper (`onnxruntime.InferenceSession`, the real class,
    in `onnxruntime.capi.onnxruntime_inference_collection`) sees it: the TensorRT, CUDA and CPU
    providers are listed; without TensorRT's libraries, initialising a session with the TensorRT
    provider raises the RuntimeError onnxruntime raises when it cannot load libnvinfer. The session
    keeps the providers and (string) options it was initialised with, as the real one reports them."""

    PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    def __init__(self, tensorrt_starts: bool):
        self.tensorrt_starts = tensorrt_starts
        self.sessions = []
        outer = self

        class InferenceSession:
            def __init__(self, options, model, is_path, read_config):
                self.session_options = options
                self.inputs_meta = [types.SimpleNamespace(name=n, type="tensor(float)") for n in
                                    ("sample", "timestep", "encoder_hidden_states", "controlnet_cond",
                                     "conditioning_scale")]
                self.outputs_meta = [types.SimpleNamespace(name="noise_pred", type="tensor(float)")]
                self.overridable_initializers = self.input_meminfos = self.output_meminfos = []
                self.input_epdevices = []
                self.model_meta = None
                self.get_profiling_start_time_ns = 0
                self._providers, self._options = [], {}

            def initialize_session(self, providers, provider_options, disabled_optimizers):
                if "TensorrtExecutionProvider" in providers and not outer.tensorrt_starts:
                    raise RuntimeError("/onnxruntime/core/session/provider_bridge_ort.cc:1862 onnxruntime::"
                                       "ProviderLibrary::Get [ONNXRuntimeError] : 1 : FAIL : Failed to load library "
                                       "libonnxruntime_providers_tensorrt.so with error: libnvinfer.so.10: cannot "
                                       "open shared object file: No such file or directory")
                self._providers = list(providers)
                self._options = {p: {str(k): str(v) for k, v in o.items()} for p, o in zip(providers, provider_options)}
                outer.sessions.append(self)

            def get_providers(self):
                return self._providers

            def get_provider_options(self):
                return self._options

        self.InferenceSession = InferenceSession

    def get_available_providers(self):
        return list(self.PROVIDERS)

    def get_default_session_options(self):
        return None

    def register_tensorrt_plugins_as_custom_ops(self, options, provider_options):
        pass


@pytest.fixture
def onnxruntime_gpu(monkeypatch, tmp_path):
    """onnxruntime's own Python session wrapper over `_StandInC`; the export is skipped (no graph is
    run). Returns a function `(tensorrt_libraries, tensorrt_starts) -> the stand-in C layer`."""
    ort = pytest.importorskip("onnxruntime")
    import onnxruntime.capi.onnxruntime_inference_collection as collection

    import echobench.engines.onnxruntime.config as ort_config
    import echobench.engines.onnxruntime.engine as ort_engine

    graph = types.SimpleNamespace(path=tmp_path / "fused.onnx", key="graphkey", reused=True, seconds=0.0)
    monkeypatch.setattr(ort_engine, "export_fused_onnx", lambda *a, **k: graph)

    def make(tensorrt_libraries: bool, tensorrt_starts: bool):
        stand_in = _StandInC(tensorrt_starts)
        monkeypatch.setattr(collection, "C", stand_in)
        monkeypatch.setattr(ort, "get_available_providers", stand_in.get_available_providers)
        monkeypatch.setattr(ort_config, "tensorrt_libraries", lambda: tensorrt_libraries)
        return stand_in

    return make


def test_the_stand_in_falls_back_as_onnxruntime_does(onnxruntime_gpu, tmp_path):
    """The real wrapper over the stand-in: TensorRT without its libraries → onnxruntime's own fallback
    to CUDA, which drops every provider option (device_id included). This is what the engine avoids."""
    import onnxruntime

    onnxruntime_gpu(tensorrt_libraries=False, tensorrt_starts=False)
    session = onnxruntime.InferenceSession(str(tmp_path / "fused.onnx"), providers=[
        ("TensorrtExecutionProvider", {"device_id": 1}), ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider"])
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    assert "device_id" not in session.get_provider_options()["CUDAExecutionProvider"]


def test_onnxruntime_cache_key_does_not_change_when_the_engine_loads(onnxruntime_gpu, components, tmp_path):
    """onnxruntime-gpu without TensorRT's libraries: the key says "cuda" before and after loading (it
    said tensorrt before and cuda after), the session runs CUDA on the device's GPU (device_id kept)."""
    from echobench.echoalign.echomod import modifier_config

    stand_in = onnxruntime_gpu(tensorrt_libraries=False, tensorrt_starts=False)
    options = {**OPTIONS, "cache_dir": str(tmp_path)}
    key = modifier_config("onnxruntime", "cifar10", CLASS_NAMES, DATASET_SIZE, options, "cuda:1")
    assert key["engine_config"]["provider"] == "cuda"
    shapes = StepShapes.for_components(components, TINY_RESOLUTION, 2, guidance=True)
    engine = make_engine("onnxruntime", "cuda:1", shapes=shapes, options={"cache_dir": str(tmp_path)})
    before = engine.config()
    engine.load(components)
    assert engine.config() == before == key["engine_config"]
    assert engine.build_info["provider"] == "cuda" and engine.build_info["provider_options"]["device_id"] == "1"
    assert [s.get_providers() for s in stand_in.sessions] == [["CUDAExecutionProvider", "CPUExecutionProvider"]]
    # TensorRT's libraries there and starting: the key and the session say tensorrt, on GPU 1.
    onnxruntime_gpu(tensorrt_libraries=True, tensorrt_starts=True)
    engine = make_engine("onnxruntime", "cuda:1", shapes=shapes, options={"cache_dir": str(tmp_path)})
    assert engine.config()["provider"] == "tensorrt"
    engine.load(components)
    assert engine.config()["provider"] == "tensorrt" == engine.build_info["provider"]
    assert engine.build_info["provider_options"]["device_id"] == "1"


def test_onnxruntime_never_runs_another_provider_than_its_key(onnxruntime_gpu, components, tmp_path):
    """The libraries load but the TensorRT provider still fails to start: an error naming the
    provider to choose, not a session on another provider under TensorRT's key."""
    onnxruntime_gpu(tensorrt_libraries=True, tensorrt_starts=False)
    shapes = StepShapes.for_components(components, TINY_RESOLUTION, 2, guidance=True)
    engine = make_engine("onnxruntime", "cuda:0", shapes=shapes, options={"cache_dir": str(tmp_path)})
    with pytest.raises(EchobenchError, match=r"tensorrt execution provider did not start.*provider=cuda"):
        engine.load(components)
    assert engine.session is None


# -------------------------------------------------------------------------- missing runtimes, bounds


@pytest.mark.parametrize("engine, module, extra", [
    ("onnxruntime", "onnxruntime", "onnx"),
    ("tensorrt", "tensorrt", "tensorrt"),
])
def test_a_missing_runtime_names_the_extra(engine, module, extra, monkeypatch):
    """Checked before the model is loaded: sd15's checkpoints are not even looked for."""
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(EchobenchError, match=rf"pip install 'echobench\[{extra}\]'"):
        make_modifier(engine, "cifar10", CLASS_NAMES, DATASET_SIZE, {}, "cpu")


def test_tensorrt_needs_a_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(EchobenchError, match="needs a CUDA device"):
        make_modifier("tensorrt", "cifar10", CLASS_NAMES, DATASET_SIZE, {}, "cpu")


def test_steps_outside_what_an_engine_was_built_for_are_errors(compile_modifier, components, reference):
    latents, t, text, control, scale = reference["args"]
    two = [torch.cat([x, x]) for x in (latents, text, control)]  # 4 images: more than batch_size=2
    with pytest.raises(EchobenchError, match=r"outside its fixed batch: 2\.\.4 rows"):
        compile_modifier.engine.denoise(two[0], t, two[1], two[2], scale)
    images, labels, seeds = inputs(3)
    with pytest.raises(EchobenchError, match="batch_size=2"):
        compile_modifier.generate_pixels(images, labels, seeds)
    # TensorRT's profile: one image to a full batch.
    shapes = StepShapes.for_components(components, TINY_RESOLUTION, 4, guidance=True)
    low, opt, high = profile_rows(shapes)
    assert (low, opt, high) == (2, 8, 8)
    check_rows("tensorrt", 6, low, high, shapes, "its optimisation profile")
    with pytest.raises(EchobenchError, match=r"outside its optimisation profile: 2\.\.8 rows.*1 to 4 images"):
        check_rows("tensorrt", 10, low, high, shapes, "its optimisation profile")


def test_tensorrt_plan_cache_keys(components, tmp_path):
    """A plan is reused for the same GPU, TensorRT version, graph and shapes; otherwise a new one is
    built and the message says what differs from the cached ones."""
    shapes = StepShapes.for_components(components, TINY_RESOLUTION, 4, guidance=True)
    settings = TensorRTConfig()
    built = plan_key("graph", shapes, settings, "NVIDIA A100-SXM4-80GB", "8.0", "10.3.0")
    (tmp_path / f"{plan_digest(built)}.plan").write_bytes(b"plan")
    (tmp_path / f"{plan_digest(built)}.json").write_text(json.dumps(built))
    assert find_plan(tmp_path, plan_key("graph", shapes, settings, "NVIDIA A100-SXM4-80GB", "8.0", "10.3.0")) == \
        (tmp_path / f"{plan_digest(built)}.plan", None)
    plan, message = find_plan(tmp_path, plan_key("graph", shapes, settings, "NVIDIA H100 80GB HBM3", "9.0", "10.7.0"))
    assert plan is None
    assert "GPU 'NVIDIA A100-SXM4-80GB' → 'NVIDIA H100 80GB HBM3'" in message
    assert "TensorRT '10.3.0' → '10.7.0'" in message
    bigger = StepShapes.for_components(components, TINY_RESOLUTION, 8, guidance=True)
    plan, message = find_plan(tmp_path, plan_key("graph", bigger, settings, "NVIDIA A100-SXM4-80GB", "8.0", "10.3.0"))
    assert plan is None and "profile rows (min, opt, max) [2, 8, 8] → [2, 16, 16]" in message
    larger = StepShapes.for_components(components, 64, 4, guidance=True)
    _, message = find_plan(tmp_path, plan_key("graph", larger, settings, "NVIDIA A100-SXM4-80GB", "8.0", "10.3.0"))
    assert "shapes (control_size, latent_size)" in message
    assert find_plan(tmp_path / "empty", built) == (None, None)


# --------------------------------------------------------------------------- registry, models, options


def test_engines_are_registered_with_their_options():
    assert {"eager", "compile", "onnxruntime", "tensorrt"} <= set(ENGINES.names())
    assert engine_option_defaults("compile") == {"backend": "inductor", "mode": "auto", "fullgraph": True,
                                                 "channels_last": None, "compile_vae": None, "inductor_flags": "default",
                                                 "fuse_qkv": False}
    assert set(engine_option_defaults("onnxruntime")) == {"provider", "exporter", "opset", "threads", "cache_dir"}
    assert "fp16" in engine_option_defaults("tensorrt")
    with pytest.raises(EchobenchError, match="Did you mean 'backend'"):
        make_diffusion_modifier("compile", "cifar10", CLASS_NAMES, DATASET_SIZE, {"backnd": "eager"}, "cpu")
    with pytest.raises(EchobenchError, match="shapes="):
        make_engine("compile", "cpu")


def test_one_registry_entry_and_one_constructor_per_engine(components):
    """Each engine is one lazy entry (its settings class, under `echobench.engines.<name>`) that says
    whether it is a diffusion engine; every diffusion engine is constructed as cls(settings, shapes, device)."""
    from echobench.echoalign.echomod import is_diffusion_engine
    from echobench.engines.options import EngineSettings
    from echobench.engines.step_shapes import StepShapes

    assert set(ENGINES.names()) == {"procedural", "eager", "compile", "onnxruntime", "tensorrt"}
    for name in ENGINES.names():
        entry = ENGINES.get(name)
        assert issubclass(entry, EngineSettings) and entry.name == name
        assert entry.__module__ == f"echobench.engines.{name}.config"
        assert entry.implementation.startswith(f"echobench.engines.{name}.")
        assert is_diffusion_engine(name) is entry.diffusion is (name != "procedural")
    assert not is_diffusion_engine("no-such-engine")
    with pytest.raises(EchobenchError, match="not a diffusion engine"):
        make_engine("procedural", "cpu")
    shapes = StepShapes.for_components(components, TINY_RESOLUTION, 2, guidance=True)
    for name, options in (("eager", {}), ("compile", {"backend": "aot_eager"}), ("onnxruntime", {})):
        entry = ENGINES.get(name)
        settings = entry.from_options(options, "cpu")
        engine = entry.load_implementation()(settings, shapes, "cpu")
        assert engine.name == name and engine.settings == settings
        if name != "onnxruntime" or importlib.util.find_spec("onnxruntime"):
            assert engine.config() == settings.engine_config("cpu")


# EchoMod cache keys (`config_digest` of `modifier_config`, and the cache folder it names with base
# seed 0) computed with the code before the move into echobench/echoalign/ (commit 0916511, module
# echobench.echomod): images cached before it must still be found.
PINNED_KEYS = {
    "eager": ({"model": "tiny"}, "c2ce048d3633fa84", "92e52f197bcbd131"),
    "eager-sd15": ({}, "8a64b6008243282e", "2c972e5dc8d7fa71"),
    "eager-options": ({"model": "tiny", "channels_last": "true", "fuse_qkv": "true", "steps": "4",
                       "vae": "madebyollin/taesd"}, "9bb96555a7113e96", "2c7e17fd2ad469d3"),
    "compile": ({"model": "tiny", "backend": "aot_eager"}, "0889d7f4b730892e", "63bc45f3799fde67"),
    # Issue 19 renamed the compile engine's `vae` (compile the VAE) to `compile_vae`, in the option and
    # in the key: this key changed from 80666ee9ad526bd5 / 516b9df8e87854b7 (README, "Cache keys").
    "compile-options": ({"model": "tiny", "compile_vae": "true", "inductor_flags": "diffusers", "fuse_qkv": "true",
                         "channels_last": "true"}, "d7bc123a76742de4", "44056f82517cff5c"),
    "onnxruntime": ({"model": "tiny", "exporter": "torchscript"}, "fb7edf86a108856f", "6ae9b0199248808d"),
}
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.parametrize("case", sorted(PINNED_KEYS))
def test_cache_keys_do_not_change(case):
    from echobench.echoalign.cache import cache_for
    from echobench.echoalign.echomod import config_digest, modifier_config

    engine = case.partition("-")[0]
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    options, digest, folder = PINNED_KEYS[case]
    key = modifier_config(engine, "cifar10", CIFAR10_NAMES, 32, options, "cpu")
    assert config_digest(key) == digest
    assert cache_for(key, "cifar10", None, base_seed=0, root="/unused").dir.name == folder


def test_model_configs():
    """sd15 is written out from the public checkpoints' config.json files: the parameter counts on
    torch's meta device match the published ones (UNet 859.5 M, VAE 83.7 M, CLIP text 123.1 M;
    ControlNet canny 361.3 M)."""
    assert set(DIFFUSION_CONFIGS) == {"sd15", "tiny", "shapes"} and default_resolution("sd15") == 512
    assert default_resolution("tiny") == default_resolution("shapes") == TINY_RESOLUTION
    assert parameter_counts("shapes") == parameter_counts("tiny")  # the tiny architecture, trained
    assert SD15_UNET["block_out_channels"] == SD15_CONTROLNET["block_out_channels"] == (320, 640, 1280, 1280)
    assert SD15_UNET["cross_attention_dim"] == SD15_CONTROLNET["cross_attention_dim"] == 768
    assert parameter_counts("sd15") == {"unet": 859_520_964, "controlnet": 361_279_120, "vae": 83_653_863,
                                        "text_encoder": 123_060_480}
    with pytest.raises(EchobenchError, match="Did you mean 'sd15'"):
        build_components("sd1.5")


def test_random_init_and_the_cache_key(components):
    """tiny with random_init: the same architecture with diffusers' own initialisation (under the
    same seeds as the test weights, so only the ControlNet's zero convolutions differ: they stay
    zero); the model identity enters EchoMod's config (and so its cache key) only when it is not the
    default."""
    fresh = build_components("tiny", random_init=True)
    assert torch.equal(fresh.unet.conv_in.weight, components.unet.conv_in.weight)
    assert fresh.controlnet.controlnet_mid_block.weight.abs().max().item() == 0
    assert components.controlnet.controlnet_mid_block.weight.abs().max().item() > 0
    other_seed = build_components("tiny", random_init=True, seed=1)
    assert not torch.equal(other_seed.unet.conv_in.weight, components.unet.conv_in.weight)
    config = modifier("eager", fresh, random_init=True, steps=1).config()
    assert config["model"] == "tiny" and config["random_init"] is True and config["resolution"] == TINY_RESOLUTION
    default = modifier("eager", components, model="sd15", resolution=TINY_RESOLUTION).config()
    assert "model" not in default and "random_init" not in default


def test_importing_the_engines_stays_light(subprocess_env):
    """Listing engines or reading their settings must not import torch or a runtime."""
    code = ("import sys, echobench.echoalign.echomod, echobench.echoalign.diffusion_configs, echobench.engines.compile, echobench.engines.onnxruntime, "
            "echobench.engines.tensorrt, echobench.engines.step_shapes, echobench.engines.export; "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'onnxruntime', 'onnx', 'tensorrt') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env)


# ------------------------------------------------------------------------- the cache key without a model


@pytest.mark.parametrize("engine, fixture, options", [
    ("eager", None, {}),
    ("compile", "compile_modifier", {"backend": "aot_eager"}),
    ("onnxruntime", "onnx_modifier", {"cache_dir": None}),
])
def test_the_cache_key_is_known_without_loading_the_model(engine, fixture, options, components, engine_cache,
                                                          request):
    """`modifier_config` (no model loaded, no engine built) equals the loaded generator's `config()`
    (for onnxruntime: after its session chose the provider)."""
    from echobench.echoalign.echomod import modifier_config

    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
        options = {"cache_dir": engine_cache}
    built = request.getfixturevalue(fixture) if fixture else modifier(engine, components, **options)
    key = modifier_config(engine, "cifar10", CLASS_NAMES, DATASET_SIZE, {**OPTIONS, **options}, "cpu")
    assert key == built.config()
    approximate = modifier_config("eager", "cifar10", CLASS_NAMES, DATASET_SIZE,
                                  {**OPTIONS, "vae": "some/taesd", "steps": "4"}, "cpu")
    assert approximate["vae"] == "some/taesd" and approximate["steps"] == 4 and "vae" not in key


def test_cached_pairs_are_served_without_building_the_generator(tmp_path, monkeypatch):
    from echobench.echoalign import methods as echoalign

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, DATASET_SIZE, DATASET_SIZE, 3), dtype=np.uint8)
    indices, labels = np.array([4, 9, 11]), np.array([0, 1, 0])
    kwargs = dict(engine="eager", engine_options={"model": "tiny", "steps": "2"}, cache_dir=str(tmp_path))
    first, stats = echoalign.modify_pairs("cifar10", None, CLASS_NAMES, images, indices, labels, **kwargs)
    assert stats.generated == 3

    def no_model(*args, **kwargs):
        raise AssertionError("the generator was built although every pair is cached")

    monkeypatch.setattr(echoalign, "make_modifier", no_model)
    again, stats = echoalign.modify_pairs("cifar10", None, CLASS_NAMES, images, indices, labels, **kwargs)
    assert (stats.cached, stats.generated) == (3, 0) and np.array_equal(again, first)
    with pytest.raises(AssertionError, match="although every pair is cached"):  # one new pair: it must be built
        echoalign.modify_pairs("cifar10", None, CLASS_NAMES, images, np.array([4, 9, 12]), labels, **kwargs)


# ----------------------------------------------------------- one option namespace (issue 19, item 3)

APPROXIMATE = {"steps": ("steps", "4", 4), "resolution": ("resolution", "16", 16),
               "tiny decoder": ("vae", "madebyollin/taesd", "madebyollin/taesd"),
               "fuse_qkv": ("fuse_qkv", "true", True)}


def engine_device(engine, monkeypatch):
    """The device each engine is resolved for here: TensorRT needs a GPU, faked (a stand-in module and
    torch.cuda.is_available), since resolving options checks the runtime before anything loads."""
    if engine != "tensorrt":
        return "cpu"
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return "cuda:0"


def test_option_names_have_one_meaning_across_every_engine():
    from echobench.echoalign.diffusion import option_namespace
    from echobench.engines.registry import diffusion_engines

    for engine in diffusion_engines():
        namespace = option_namespace(engine)  # raises for a name both define
        assert namespace["vae"][0] == "diffusion" and namespace["variant"][0] == "diffusion"
    assert option_namespace("compile")["compile_vae"] == ("compile", None)


@pytest.mark.parametrize("setting", sorted(APPROXIMATE))
@pytest.mark.parametrize("engine", ["eager", "compile", "onnxruntime", "tensorrt"])
def test_every_engine_resolves_every_approximate_setting(engine, setting, monkeypatch):
    """Option resolution (the cache key, from the settings alone) for each engine × approximate
    setting on the tiny model. fuse_qkv is an option of the engines that run the diffusers modules
    in torch; the exported graphs (onnxruntime, tensorrt) do not have it, and say so."""
    from echobench.echoalign.echomod import modifier_config

    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    device = engine_device(engine, monkeypatch)
    name, value, expected = APPROXIMATE[setting]
    options = {"model": "tiny", name: value}
    if name == "fuse_qkv" and engine in ("onnxruntime", "tensorrt"):
        with pytest.raises(EchobenchError, match="unknown EchoMod engine option.*'fuse_qkv'"):
            modifier_config(engine, "cifar10", CLASS_NAMES, DATASET_SIZE, options, device)
        return
    key = modifier_config(engine, "cifar10", CLASS_NAMES, DATASET_SIZE, options, device)
    found = key["engine_config"].get(name) if name == "fuse_qkv" else key[name]
    assert found == expected and key["engine"] == engine
    assert "compile_vae" not in key["engine_config"]  # the tiny decoder is not "compile the VAE"


def test_the_old_compile_vae_spelling_is_explained():
    with pytest.raises(EchobenchError, match="vae='true'.*compile_vae"):
        make_diffusion_modifier("compile", "cifar10", CLASS_NAMES, DATASET_SIZE, {"model": "tiny", "vae": "true"}, "cpu")
    with pytest.raises(EchobenchError, match="compile_vae"):
        make_diffusion_modifier("compile", "cifar10", CLASS_NAMES, DATASET_SIZE, {"model": "tiny", "vae": True}, "cpu")


def test_an_explicit_fp16_variant_in_float32_is_part_of_the_key():
    from echobench.echoalign.echomod import modifier_config

    plain = modifier_config("eager", "cifar10", CLASS_NAMES, DATASET_SIZE, {"model": "tiny"}, "cpu")
    auto = modifier_config("eager", "cifar10", CLASS_NAMES, DATASET_SIZE, {"model": "tiny", "variant": "auto"}, "cpu")
    fp16 = modifier_config("eager", "cifar10", CLASS_NAMES, DATASET_SIZE, {"model": "tiny", "variant": "fp16"}, "cpu")
    assert plain == auto and "variant" not in plain and fp16["variant"] == "fp16"


@pytest.mark.slow  # five aot_eager compiles of the tiny model (~40 s)
@pytest.mark.parametrize("setting", sorted(APPROXIMATE))
def test_the_compile_engine_runs_every_approximate_setting(setting, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    name, value, _ = APPROXIMATE[setting]
    if name == "vae":
        diffusers.AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                                  num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1)).save_pretrained(tmp_path / "taesd")
        value = str(tmp_path / "taesd")
    echomod = modifier("compile", tiny_components(0), backend="aot_eager", compile_vae="true", steps="2",
                       **{name: value})
    images, labels, seeds = inputs(2)
    out = echomod.generate(images, labels, seeds)
    assert out.shape == images.shape and echomod.engine.build_info["graphs"] == 2


# ------------------------------------------------- a fully cached run loads no model, for every engine


@pytest.mark.parametrize("engine, device", [("eager", "cpu"), ("compile", "cpu"), ("onnxruntime", "cpu"),
                                            ("onnxruntime", "cuda:0"), ("tensorrt", "cuda:0")])
def test_a_fully_cached_run_never_builds_the_diffusion_model(engine, device, tmp_path, monkeypatch, request):
    """For every engine (onnxruntime on a GPU through the onnxruntime-gpu stand-in, without TensorRT's
    libraries: the case whose key used to change on loading): pairs stored under the key the
    engine reports are found again by the next run from its settings alone, and neither the model nor
    the generator is built."""
    import echobench.echoalign.diffusion as diffusion
    import echobench.echoalign.diffusion_configs as configs
    from echobench.echoalign import methods
    from echobench.echoalign.cache import cache_for
    from echobench.echoalign.echomod import modifier_config

    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
        if device != "cpu":
            request.getfixturevalue("onnxruntime_gpu")(tensorrt_libraries=False, tensorrt_starts=False)
    if engine == "tensorrt":
        engine_device(engine, monkeypatch)
    options = {"model": "tiny", "steps": "2", "cache_dir": str(tmp_path / "engines")} if engine == "onnxruntime" \
        else {"model": "tiny", "steps": "2"}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, DATASET_SIZE, DATASET_SIZE, 3), dtype=np.uint8)
    indices, labels = np.array([4, 9, 11]), np.array([0, 1, 0])
    key = modifier_config(engine, "cifar10", CLASS_NAMES, DATASET_SIZE, options, device)
    if engine == "onnxruntime" and device != "cpu":  # the key a loaded engine reports is this one
        shapes = StepShapes.for_components(tiny_components(0), TINY_RESOLUTION, 2, guidance=True)
        loaded = make_engine("onnxruntime", device, shapes=shapes, options={"cache_dir": options["cache_dir"]})
        loaded.load(tiny_components(0))
        assert loaded.config() == key["engine_config"]
    stored = types.SimpleNamespace(config=lambda: key, generate=lambda images, labels, seeds: 255 - images)
    cache_for(key, "cifar10", None, base_seed=0, root=str(tmp_path)).get_or_generate(stored, images, indices, labels)

    def no_model(*args, **kwargs):
        raise AssertionError("the diffusion model or generator was built although every pair is cached")

    for module, name in ((diffusion, "load_model"), (diffusion, "build_components"), (diffusion, "load_checkpoints"),
                         (configs, "build_components"), (configs, "load_checkpoints"), (methods, "make_modifier")):
        monkeypatch.setattr(module, name, no_model)
    out, stats = methods.modify_pairs("cifar10", None, CLASS_NAMES, images, indices, labels, engine=engine,
                                      engine_options=options, device=device, cache_dir=str(tmp_path))
    assert (stats.cached, stats.generated) == (3, 0) and np.array_equal(out, 255 - images)
