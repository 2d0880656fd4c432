"""EchoMod on diffusers components (`echobench/echoalign/diffusion.py`) with the eager engine.

Everything runs on tiny randomly initialised modules written to a temporary directory with
`save_pretrained` and read back with the real loading code: nothing is downloaded.

Tolerances (fp32 on a CPU, one torch thread, 32×32 generation, 20 steps with guidance 7.5):
- Parity with diffusers' `StableDiffusionControlNetPipeline`: the largest difference measured over
  UniPC, DDIM, Euler ancestral, Euler, DPM++ and PNDM was 8.3e-7 in [0, 1] pixel space (the prompts
  are encoded one at a time here and as a batch there, so matrix shapes and summation orders differ).
  PIXEL_ATOL = 1e-5 leaves a 12× margin and is still 400× below one uint8 level (1/255). After rounding
  to uint8 all pixels were equal except at most 1 in 9,216 (one level apart).
- Batch independence: one batch of three vs one at a time differed by at most 1.1e-6: same PIXEL_ATOL.
"""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from echobench.echoalign.echomod import make_modifier  # noqa: E402
from echobench.echoalign.diffusion import (  # noqa: E402
    DiffusionConfig, DiffusionEchoMod, load_components, make_diffusion_modifier,
    resize_back, save_tiny_checkpoint, scheduler_class, tiny_components, to_uint8,
)
from echobench.echoalign.diffusion_configs import TINY_RESOLUTION  # noqa: E402
from echobench.errors import EchobenchError  # noqa: E402
from echobench.engines.eager.config import EagerConfig  # noqa: E402
from echobench.engines.eager.engine import EagerEngine  # noqa: E402

PIXEL_ATOL = 1e-5  # see the module docstring
UINT8_EQUAL_FRACTION = 0.999
CLASS_NAMES = ["cat", "aquarium_fish"]
DATASET_SIZE = 16  # the "dataset" resolution; generation runs at TINY_RESOLUTION (32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(base_model dir, controlnet dir) of the tiny checkpoint, written once for this file."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint"))


@pytest.fixture(scope="module")
def components(checkpoint):
    return load_components(tiny_config(checkpoint), "cpu", torch.float32)


def tiny_config(checkpoint, **overrides) -> DiffusionConfig:
    base, control = checkpoint
    return DiffusionConfig(base_model=str(base), controlnet=str(control), resolution=TINY_RESOLUTION, **overrides)


def echomod(components, checkpoint, **overrides) -> DiffusionEchoMod:
    engine = EagerEngine(EagerConfig().resolve("cpu"))
    return DiffusionEchoMod(CLASS_NAMES, DATASET_SIZE, components, engine, tiny_config(checkpoint, **overrides))


def inputs(n: int = 3):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, DATASET_SIZE, DATASET_SIZE, 3), dtype=np.uint8)
    labels = np.arange(n) % len(CLASS_NAMES)
    seeds = np.array([11, 2**62 + 5, 7, 123, 99][:n])  # 63-bit seeds, as sample_seeds makes them
    return images, labels, seeds


def canny_control(image: np.ndarray, resolution: int):
    """The diffusers ControlNet documentation's canny recipe, written out independently of EchoMod:
    cv2.Canny(image, 75, 75) on the (bicubic-upscaled) RGB image, stacked to three channels, as PIL."""
    import cv2
    from PIL import Image

    big = np.array(Image.fromarray(image).resize((resolution, resolution), Image.Resampling.BICUBIC))
    edges = cv2.Canny(big, 75, 75)[:, :, None]
    return Image.fromarray(np.concatenate([edges] * 3, axis=2))


def pipeline_output(components, config: DiffusionConfig, images, labels, seeds) -> np.ndarray:
    """What diffusers' own pipeline makes of the same inputs, called the documented way."""
    pipe = diffusers.StableDiffusionControlNetPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet, controlnet=components.controlnet,
        scheduler=scheduler_class(config.scheduler).from_config(components.scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    prompts = [f"a photo of {CLASS_NAMES[y].replace('_', ' ')}" for y in labels]
    return pipe(
        prompts, image=[canny_control(im, config.resolution) for im in images],
        num_inference_steps=config.steps, guidance_scale=config.guidance_scale,
        controlnet_conditioning_scale=config.controlnet_conditioning_scale,
        generator=[torch.Generator().manual_seed(int(s)) for s in seeds], output_type="np",
    ).images


@pytest.mark.parametrize("scheduler, steps", [("unipc", 20), ("ddim", 10), ("euler_a", 10)])
def test_matches_the_diffusers_controlnet_pipeline(components, checkpoint, scheduler, steps):
    """Same modules, scheduler, seeds and inputs → the pipeline's images, before the resize back.
    UniPC at the paper's 20 steps; euler_a draws fresh noise in every step, so the per-sample
    generators must reach the scheduler as the pipeline passes them."""
    modifier = echomod(components, checkpoint, scheduler=scheduler, steps=steps)
    images, labels, seeds = inputs()
    ours = modifier.generate_pixels(images, labels, seeds)
    reference = pipeline_output(components, modifier.settings, images, labels, seeds)
    assert ours.shape == reference.shape == (3, TINY_RESOLUTION, TINY_RESOLUTION, 3)
    assert np.abs(ours - reference).max() <= PIXEL_ATOL
    ours8, reference8 = to_uint8(ours).astype(int), to_uint8(reference).astype(int)
    assert np.abs(ours8 - reference8).max() <= 1
    assert (ours8 == reference8).mean() >= UINT8_EQUAL_FRACTION


def test_a_tiny_vae_is_loaded_when_asked_and_decodes_as_the_pipeline_would(components, checkpoint, tmp_path):
    """`vae`: an AutoencoderTiny (TAESD-shaped, tiny and random here) read back with the real loading
    code replaces the checkpoint's decoder, exactly as `pipe.vae = AutoencoderTiny...` does in diffusers;
    the images change, so does the cache key."""
    import copy

    from echobench.echoalign.diffusion import load_model

    tiny_vae = diffusers.AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                                         num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1))
    tiny_vae.save_pretrained(tmp_path / "taesd")
    config = tiny_config(checkpoint, vae=str(tmp_path / "taesd"), steps=4)
    loaded = load_model(config, "cpu", torch.float32)
    assert isinstance(loaded.vae, diffusers.AutoencoderTiny)
    with_tiny = copy.copy(components)
    with_tiny.vae = loaded.vae
    modifier = DiffusionEchoMod(CLASS_NAMES, DATASET_SIZE, with_tiny, EagerEngine(EagerConfig().resolve("cpu")), config)
    images, labels, seeds = inputs(2)
    ours = modifier.generate_pixels(images, labels, seeds)
    assert np.abs(ours - pipeline_output(with_tiny, config, images, labels, seeds)).max() <= PIXEL_ATOL
    exact = echomod(components, checkpoint, steps=4)
    assert np.abs(ours - exact.generate_pixels(images, labels, seeds)).max() > 100 * PIXEL_ATOL
    assert modifier.config()["vae"] == str(tmp_path / "taesd") and "vae" not in exact.config()
    with pytest.raises(EchobenchError, match="vae: .* is not a directory"):
        load_model(tiny_config(checkpoint, vae=str(tmp_path / "missing")), "cpu", torch.float32)


def test_parity_is_not_vacuous(components, checkpoint):
    """The tiny model reacts to the seed, the label and the control image far beyond PIXEL_ATOL, so
    the parity test would see a wrong seed, prompt or control image."""
    modifier = echomod(components, checkpoint, steps=4)
    images, labels, seeds = inputs(1)
    base = modifier.generate_pixels(images, labels, seeds)
    other_seed = modifier.generate_pixels(images, labels, seeds + 1)
    other_label = modifier.generate_pixels(images, 1 - labels, seeds)
    no_edges = modifier.generate_pixels(np.zeros_like(images), labels, seeds)
    for changed in (other_seed, other_label, no_edges):
        assert np.abs(changed - base).max() > 100 * PIXEL_ATOL


def test_a_sample_does_not_depend_on_its_batch(components, checkpoint):
    """One batch, one at a time, shuffled, and `generate` split into batches of 2 + 1 all agree
    (10 steps of UniPC: its multistep history is per sample, like everything else)."""
    images, labels, seeds = inputs(3)
    modifier = echomod(components, checkpoint, steps=10, batch_size=2)
    together = modifier.generate_pixels(images, labels, seeds)
    alone = np.concatenate([modifier.generate_pixels(images[i:i + 1], labels[i:i + 1], seeds[i:i + 1])
                            for i in range(3)])
    order = [2, 0, 1]
    shuffled = modifier.generate_pixels(images[order], labels[order], seeds[order])
    assert np.abs(together - alone).max() <= PIXEL_ATOL
    assert np.abs(together[order] - shuffled).max() <= PIXEL_ATOL
    split = modifier.generate(images, labels, seeds)
    assert split.shape == images.shape and split.dtype == np.uint8
    whole = resize_back(to_uint8(together), DATASET_SIZE, DATASET_SIZE)
    assert np.abs(split.astype(int) - whole).max() <= 1


def test_text_embeddings_are_computed_once_per_class(components, checkpoint):
    calls = []
    hook = components.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        modifier = echomod(components, checkpoint, steps=2)
        images, _, seeds = inputs(3)
        modifier.generate(images, np.array([0, 1, 0]), seeds)
        modifier.generate(images, np.array([1, 1, 0]), seeds)
    finally:
        hook.remove()
    assert len(calls) == len(CLASS_NAMES) + 1  # each class prompt and the unconditional "" once


def test_loads_a_local_checkpoint_through_the_engine_registry(components, checkpoint):
    """save_pretrained → from_pretrained round trip, and the "eager" engine built from options given
    as strings (as a command line passes them)."""
    assert type(components.scheduler).__name__ == "PNDMScheduler"  # the checkpoint's own scheduler
    fresh = tiny_components(0)
    for name in ("unet", "controlnet", "vae", "text_encoder"):
        saved, loaded = getattr(fresh, name).state_dict(), getattr(components, name).state_dict()
        assert saved.keys() == loaded.keys()
        assert all(torch.equal(saved[k], loaded[k]) for k in saved), name
    base, control = checkpoint
    options = {"base_model": str(base), "controlnet": str(control), "resolution": str(TINY_RESOLUTION),
               "steps": "2", "scheduler": "ddim", "channels_last": "false"}
    modifier = make_modifier("eager", "cifar10", CLASS_NAMES, DATASET_SIZE, options, "cpu")
    config = modifier.config()
    assert config["engine"] == "eager" and config["dtype"] == "float32" and config["steps"] == 2
    assert config["scheduler"] == "ddim" and config["canny_low"] == config["canny_high"] == 75
    assert config["prompt_template"] == "a photo of {}" and config["guidance_scale"] == 7.5
    images, labels, seeds = inputs(2)
    out = modifier.generate(images, labels, seeds)
    assert out.shape == images.shape and out.dtype == np.uint8


def test_paper_defaults():
    config = DiffusionConfig()
    assert (config.base_model, config.controlnet) == ("stable-diffusion-v1-5/stable-diffusion-v1-5",
                                                      "lllyasviel/sd-controlnet-canny")
    assert (config.resolution, config.canny_low, config.canny_high, config.steps) == (512, 75, 75, 20)
    assert (config.scheduler, config.guidance_scale, config.controlnet_conditioning_scale) == ("unipc", 7.5, 1.0)
    assert config.prompt_template == "a photo of {}" and config.negative_prompt == ""
    assert EagerConfig().resolve("cuda").dtype == "float16" and EagerConfig().resolve("cpu").dtype == "float32"


def test_a_missing_checkpoint_offline_names_it_and_the_cache(checkpoint, monkeypatch, tmp_path):
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time, so patch it too
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(EchobenchError) as missing_base:
        load_components(DiffusionConfig(base_model="echobench-test/no-such-checkpoint"), "cpu", torch.float32)
    message = str(missing_base.value)
    assert "'echobench-test/no-such-checkpoint'" in message and str(cache) in message
    assert "offline" in message and "local directory path as base_model/controlnet" in message
    base, _ = checkpoint
    with pytest.raises(EchobenchError, match="ControlNet of 'echobench-test/no-such-controlnet'"):
        load_components(DiffusionConfig(base_model=str(base), controlnet="echobench-test/no-such-controlnet"),
                        "cpu", torch.float32)
    with pytest.raises(EchobenchError, match="not a directory"):
        load_components(DiffusionConfig(base_model=str(tmp_path / "absent")), "cpu", torch.float32)


@pytest.mark.parametrize("options, fragment", [
    ({"stepz": 2}, "Did you mean 'steps'"),
    ({"sampler": "ddim"}, "Known options: base_model, batch_size"),
    ({"steps": "many"}, "expected int"),
    ({"channels_last": "maybe"}, "expected bool"),
    ({"fuse_qkv": "auto"}, "expected bool"),
    ({"scheduler": "heun2"}, "unknown scheduler"),
    ({"dtype": "fp8"}, "unknown dtype"),
])
def test_bad_options_are_user_errors(options, fragment):
    with pytest.raises(EchobenchError, match=fragment):
        make_diffusion_modifier("eager", "cifar10", CLASS_NAMES, DATASET_SIZE, options, "cpu")


def test_importing_the_registry_stays_light(subprocess_env):
    """Listing engines or reading engine settings must not import torch or diffusers."""
    code = ("import sys, echobench.echoalign.echomod as e, echobench.engines.base, echobench.engines.eager; "
            "entries = [e.ENGINES.get(name) for name in e.ENGINES.names()]; "
            "[entry.option_defaults() for entry in entries]; "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'cv2') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env)


# ------------------------------------------------------------------ weight variants (issue 19, item 4)


def _save_layout(root, fp32: bool, fp16: bool):
    """The tiny checkpoint saved with `save_pretrained` as a hub cache may hold it: the plain (fp32)
    weight files, the `*.fp16.*` variant files (`save_pretrained(variant="fp16")` of the modules cast
    to float16), or both. Returns (base_model dir, controlnet dir)."""
    import diffusers

    components = tiny_components(0)
    base, control = root / "stable-diffusion", root / "controlnet"
    for variant, wanted in ((None, fp32), ("fp16", fp16)):
        if not wanted:
            continue
        dtype = torch.float16 if variant else torch.float32
        parts = {name: getattr(components, name).to(dtype) for name in ("unet", "vae", "text_encoder", "controlnet")}
        pipeline = diffusers.StableDiffusionPipeline(
            vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=components.tokenizer, unet=parts["unet"],
            scheduler=components.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipeline.save_pretrained(base, variant=variant)
        parts["controlnet"].save_pretrained(control, variant=variant)
    return base, control


@pytest.fixture
def variants_seen(monkeypatch):
    """The `variant=` every from_pretrained of a weighted module was called with."""
    import diffusers
    import transformers

    seen = []
    for cls in (diffusers.UNet2DConditionModel, diffusers.AutoencoderKL, diffusers.ControlNetModel,
                transformers.CLIPTextModel):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, __original=original, **kwargs):
            seen.append((klass.__name__, kwargs.get("variant")))
            return __original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    return seen


@pytest.mark.parametrize("layout, dtype, expected", [
    ("fp32", torch.float16, None),  # no fp16 files: the plain ones, cast
    ("both", torch.float16, "fp16"),  # half the bytes for the same numbers
    ("both", torch.float32, None),
    ("fp16", torch.float16, "fp16"),  # a cache holding only the fp16 files works
])
def test_the_weight_variant_follows_the_dtype_and_the_files(layout, dtype, expected, tmp_path, variants_seen):
    from echobench.echoalign.diffusion_configs import BASE_WEIGHTS, checkpoint_variant

    base, control = _save_layout(tmp_path, fp32=layout in ("fp32", "both"), fp16=layout in ("fp16", "both"))
    assert checkpoint_variant(str(base), BASE_WEIGHTS, dtype) == expected
    loaded = load_components(tiny_config((base, control)), "cpu", dtype)
    assert {variant for _, variant in variants_seen} == {expected} and len(variants_seen) == 4
    assert loaded.unet.dtype == dtype and loaded.text_encoder.dtype == dtype
    reference = tiny_components(0).unet.conv_in.weight.to(dtype)
    assert torch.equal(loaded.unet.conv_in.weight, reference)  # fp16 files = the fp32 weights rounded


def test_a_missing_variant_names_the_files_it_looked_for(tmp_path):
    base, control = _save_layout(tmp_path, fp32=False, fp16=True)
    with pytest.raises(EchobenchError) as error:  # float32: "auto" reads the plain files, which are not there
        load_components(tiny_config((base, control)), "cpu", torch.float32)
    message = str(error.value)
    assert "diffusion_pytorch_model.safetensors or" in message and "variant=" in message
    loaded = load_components(tiny_config((base, control), variant="fp16"), "cpu", torch.float32)  # asked for
    assert loaded.unet.dtype == torch.float32
    plain, _ = _save_layout(tmp_path / "plain", fp32=True, fp16=False)
    with pytest.raises(EchobenchError, match=r"unet/diffusion_pytorch_model\.fp16\.safetensors or "
                                             r"unet/diffusion_pytorch_model\.fp16\.bin"):
        load_components(tiny_config((plain, control), variant="fp16"), "cpu", torch.float32)
    with pytest.raises(EchobenchError, match="unknown variant"):
        DiffusionConfig(variant="int8")
