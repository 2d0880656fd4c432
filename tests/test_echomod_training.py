"""Training EchoMod's diffusion model for shapes (`echobench train-echomod`) and measuring approximate
speedups against it (`echobench bench approx`), at sizes that run in seconds."""

import json

import numpy as np
import pytest

from echobench.data.shapes import CLASS_NAMES
from echobench.echoalign.generator_training import TrainingConfig, train_shapes_echomod

QUICK = TrainingConfig(n_train=64, batch_size=8, vae_steps=3, unet_steps=3, controlnet_steps=3, tiny_vae_steps=3,
                       warmup_steps=1, eval_images=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "echomod"
    summary = train_shapes_echomod(out, QUICK, progress=False, log=lambda _: None)
    return out, summary


def test_the_folder_has_the_checkpoint_layouts_and_the_record(trained):
    out, summary = trained
    assert sorted(p.name for p in out.iterdir()) == ["controlnet", "stable-diffusion", "tiny-vae", "training.json"]
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (out / "stable-diffusion" / part).is_dir()
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["unet_steps"] == 3 and record["environment"]["python"]
    assert [curve[-1][0] for curve in record["losses"].values()] == [3, 3, 3, 3]
    assert all(np.isfinite(curve[-1][1]) for curve in record["losses"].values())
    vae_config = json.loads((out / "stable-diffusion" / "vae" / "config.json").read_text())
    assert vae_config["scaling_factor"] == pytest.approx(summary["scaling_factor"]) and summary["scaling_factor"] > 0
    assert not out.with_name(out.name + ".partial").exists()
    accuracy = record["prompt_accuracy"]
    assert accuracy["n"] == 8 and 0 <= accuracy["accuracy"] <= 1 and accuracy["chance"] == pytest.approx(0.1)


def test_the_controlnet_was_trained_from_zero_convolutions(trained):
    """`from_unet` starts the ControlNet's output convolutions at zero; three steps move them."""
    import diffusers

    controlnet = diffusers.ControlNetModel.from_pretrained(trained[0] / "controlnet")
    assert any(block.weight.abs().max() > 0 for block in controlnet.controlnet_down_blocks)


def test_echomod_loads_the_trained_folder_with_its_tiny_vae(trained):
    from echobench.data.shapes import load_shapes
    from echobench.echoalign.diffusion import make_diffusion_modifier

    out, _ = trained
    world = load_shapes(n_train=4, n_test=1, seed=0)
    options = {"model": "sd15", "base_model": str(out / "stable-diffusion"), "controlnet": str(out / "controlnet"),
               "resolution": 32, "steps": 2}
    exact = make_diffusion_modifier("eager", "shapes", list(CLASS_NAMES), 32, options, "cpu")
    tiny = make_diffusion_modifier("eager", "shapes", list(CLASS_NAMES), 32, {**options, "vae": str(out / "tiny-vae")}, "cpu")
    labels, seeds = np.array([0, 3, 5, 9]), np.arange(4)
    a = exact.generate(world.train_images, labels, seeds)
    b = tiny.generate(world.train_images, labels, seeds)
    assert a.shape == b.shape == (4, 32, 32, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)  # the tiny decoder is another decoder
    assert exact.config() != tiny.config()  # so the cache keeps them apart


def test_training_is_deterministic(trained, tmp_path):
    import torch

    out, summary = trained
    again = train_shapes_echomod(tmp_path / "again", QUICK, progress=False, log=lambda _: None)
    assert again["losses"] == summary["losses"]
    from safetensors.torch import load_file

    first = load_file(out / "controlnet" / "diffusion_pytorch_model.safetensors")
    second = load_file(tmp_path / "again" / "controlnet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow  # 66 s; the other stages' tests run in the default set
def test_the_vae_learns(monkeypatch, tmp_path):
    """The reconstruction loss of the second 50 steps is below that of the first 50."""
    from echobench.echoalign import generator_training as echomod_training

    config = TrainingConfig(n_train=64, batch_size=8, vae_steps=100, unet_steps=0, controlnet_steps=0,
                            tiny_vae_steps=0, warmup_steps=10)
    saved = {}
    monkeypatch.setattr(echomod_training, "_save", lambda out, *args: saved.update(summary=args[-1]))
    train_shapes_echomod(tmp_path / "unsaved", config, progress=False, log=lambda _: None)
    (_, first), (_, second) = saved["summary"]["losses"]["vae"]
    assert second < first


def test_an_existing_folder_is_refused_and_left_alone(tmp_path, cli):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, _, err = cli("train-echomod", "--out", out, "--vae-steps", "1")
    assert code == 2 and "already exists" in err and "Traceback" not in err
    assert (out / "mine.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1


@pytest.mark.parametrize("args, fragment", [(["--batch-size", "0"], "batch_size must be >= 1"),
                                            (["--image-size", "36"], "multiple of 8"),
                                            (["--text-dropout", "1.5"], "text_dropout must lie in [0, 1]")])
def test_bad_training_options_are_user_errors(args, fragment, tmp_path, cli):
    code, _, err = cli("train-echomod", "--out", tmp_path / "new", *args)
    assert code == 2 and fragment in err and not (tmp_path / "new").exists()


# --- bench approx ---------------------------------------------------------------------------------

def test_bench_approx_compares_variants_on_the_same_pairs(cli, tmp_path):
    """The tiny random model: the exact row agrees with itself; fewer steps change S but not the setting."""
    out = tmp_path / "approx.json"
    code, stdout, _ = cli("bench", "approx", "shapes", "--noise", "instance:0.3", "--dataset-option", "n_train=60",
                          "--dataset-option", "n_test=10", "--engine", "eager", "--engine-option", "model=tiny",
                          "--engine-option", "steps=2", "--variant", "steps=1", "--variant", "steps=1,resolution=16",
                          "--tau", "0.5", "--no-progress", "--out", out, "--grid", tmp_path / "grid.png")
    assert code == 0 and "precision@k(exact)" in stdout
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads(out.read_text())
    exact, fewer, smaller = doc["rows"]
    assert [r["variant"] for r in doc["rows"]] == ["exact", "steps=1", "steps=1,resolution=16"]
    assert exact["decision_agreement"] == 1.0 and exact["mean_abs_delta_s"] == 0.0 and exact["speedup"] == 1.0
    assert fewer["options"] == {"model": "tiny", "steps": 1} and smaller["options"]["resolution"] == 16
    assert fewer["mean_abs_delta_s"] > 0 and smaller["mean_abs_delta_s"] > 0
    assert all(r["n"] == doc["n"] and r["tau"] == 0.5 for r in doc["rows"])
    assert all(r["seconds_per_image"] > 0 for r in doc["rows"])
    assert list(doc["paired"]["rows"]) == ["steps=1", "steps=1,resolution=16"]
    assert doc["paired"]["rows"]["steps=1"]["auroc"]["delta"] == pytest.approx(fewer["auroc"] - exact["auroc"])
    assert len(doc["samples"]["is_clean"]) == doc["n"] and set(doc["samples"]["similarity"]) == set(
        r["variant"] for r in doc["rows"])
    from echobench.bench.approx import paired_differences

    same = json.dumps(paired_differences(doc), sort_keys=True) == json.dumps(doc["paired"], sort_keys=True)
    assert same  # the JSON alone reproduces the intervals (compared as text: NaN != NaN)
    assert "paired-bootstrap interval" in stdout


def _approx_doc(exact, variant, is_clean, tau=0.5, seed=0):
    return {"seed": seed, "tau": tau, "params": {"strict": False},
            "samples": {"is_clean": list(is_clean), "similarity": {"exact": list(exact), "v": list(variant)}}}


def test_paired_differences_are_zero_for_an_identical_variant():
    from echobench.bench.approx import paired_differences

    rng = np.random.default_rng(0)
    is_clean = rng.random(200) < 0.7
    s = np.where(is_clean, 0.6, 0.4) + rng.normal(0, 0.2, 200)
    got = paired_differences(_approx_doc(s, s, is_clean), resamples=200)["rows"]["v"]
    assert all(d == {"delta": 0.0, "low": 0.0, "high": 0.0} for d in got.values())


def test_paired_differences_see_a_small_shift_that_one_auroc_cannot():
    """Lowering the noisy samples' S by a little raises AUROC by far less than its own standard error
    (≈ 0.02 here), yet the paired interval lies above zero; another seed draws other resamples."""
    from echobench.bench.approx import paired_differences

    rng = np.random.default_rng(1)
    is_clean = rng.random(900) < 0.7
    s = np.where(is_clean, 0.55, 0.45) + rng.normal(0, 0.2, 900)
    better = s - np.where(is_clean, 0.0, 0.005)
    got = paired_differences(_approx_doc(s, better, is_clean), resamples=500)
    d = got["rows"]["v"]["auroc"]
    assert 0 < d["low"] <= d["delta"] <= d["high"] < 0.01
    assert got == paired_differences(_approx_doc(s, better, is_clean), resamples=500)  # reproducible
    assert got != paired_differences(_approx_doc(s, better, is_clean, seed=5), resamples=500)
    with pytest.raises(Exception, match="resamples >= 1"):
        paired_differences(_approx_doc(s, better, is_clean), resamples=0)


def test_precision_at_k_ranks_by_similarity():
    from echobench.bench.approx import _precision_at_k

    s = np.array([0.9, 0.1, 0.8, 0.7])
    clean = np.array([True, False, False, True])
    assert _precision_at_k(s, clean, 1) == 1.0
    assert _precision_at_k(s, clean, 2) == 0.5
    assert np.isnan(_precision_at_k(s, clean, 0))


@pytest.mark.parametrize("variant", ["steps", "steps=", "=3", "steps=2,,"])
def test_a_malformed_variant_is_a_user_error(variant, cli):
    code, _, err = cli("bench", "approx", "shapes", "--noise", "instance:0.3", "--variant", variant)
    assert code == 2 and "--variant must look like" in err and "Traceback" not in err


def test_bench_approx_needs_a_variant(cli):
    code, _, err = cli("bench", "approx", "shapes", "--noise", "instance:0.3", "--dataset-option", "n_train=20",
                       "--dataset-option", "n_test=5", "--engine", "eager", "--engine-option", "model=tiny")
    assert code == 2 and "at least one approximate variant" in err


def test_shows_class_reads_the_shapes_class_of_an_image():
    """The fidelity read-out of `bench approx`: originals show their clean class, not another one."""
    from echobench.bench.approx import shows_class
    from echobench.data.shapes import load_shapes

    world = load_shapes(n_train=200, n_test=1, seed=3)
    labels = np.asarray(world.train_labels)
    assert shows_class(world.train_images, labels).mean() > 0.8
    assert shows_class(world.train_images, (labels + 1) % 10).mean() < 0.1


def test_training_continues_from_a_trained_folder(trained, tmp_path):
    """Stages with 0 steps keep their weights (and the VAE its scaling); trained stages move on."""
    import dataclasses

    import torch
    from safetensors.torch import load_file

    first, summary = trained
    config = dataclasses.replace(QUICK, seed=1, vae_steps=0, controlnet_steps=0, tiny_vae_steps=0, unet_steps=2)
    out = tmp_path / "more"
    again = train_shapes_echomod(out, config, init_from=first, progress=False, log=lambda _: None)
    assert again["scaling_factor"] == summary["scaling_factor"]
    assert again["previous"]["losses"] == summary["losses"] and again["init_from"] == str(first)

    def weights(folder, part):
        return load_file(next((folder / part).glob("*.safetensors")))

    for part in ("stable-diffusion/vae", "controlnet", "tiny-vae"):
        a, b = weights(first, part), weights(out, part)
        assert all(torch.equal(a[k], b[k]) for k in a), part
    a, b = weights(first, "stable-diffusion/unet"), weights(out, "stable-diffusion/unet")
    assert not all(torch.equal(a[k], b[k]) for k in a)
    from echobench.echoalign.generator_folder import total_steps

    assert total_steps(again) == {"vae": 3, "unet": 5, "controlnet": 3, "tiny_vae": 3}


def _same_weights(first, second) -> bool:
    import torch
    from safetensors.torch import load_file

    for part in ("stable-diffusion/unet", "stable-diffusion/vae", "controlnet", "tiny-vae"):
        a, b = (load_file(next((folder / part).glob("*.safetensors"))) for folder in (first, second))
        if not all(torch.equal(a[k], b[k]) for k in a):
            return False
    return True


def test_ctrl_c_saves_the_state_and_the_same_command_resumes_to_the_same_weights(trained, tmp_path, monkeypatch):
    """A real SIGINT during the UNet's second step: the step finishes, the state is saved, the run ends;
    run again, it continues to exactly the weights and losses of the uninterrupted run."""
    import signal

    from echobench.echoalign import generator_training

    first, summary = trained
    calls, real = [], generator_training._eps_loss

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(generator_training, "_eps_loss", interrupted)
    out = tmp_path / "pieces"
    with pytest.raises(KeyboardInterrupt):
        train_shapes_echomod(out, QUICK, progress=False, log=lambda _: None)
    assert not out.exists() and out.with_name("pieces.checkpoint").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    monkeypatch.setattr(generator_training, "_eps_loss", real)
    again = train_shapes_echomod(out, QUICK, progress=False, log=lambda _: None)
    assert again["resumed"] == [{"stage": "unet", "step": 2}]
    assert again["losses"] == summary["losses"] and _same_weights(first, out)
    assert not out.with_name("pieces.checkpoint").exists()


def test_a_crash_resumes_from_the_last_periodic_checkpoint(trained, tmp_path, monkeypatch):
    import dataclasses

    from echobench.echoalign import generator_training

    first, summary = trained
    often = dataclasses.replace(QUICK, checkpoint_minutes=1e-9)  # a checkpoint after every step
    calls, real = [], generator_training._distill_loss

    def crashing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the machine went away")
        return real(*args)

    monkeypatch.setattr(generator_training, "_distill_loss", crashing)
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError):
        train_shapes_echomod(out, often, progress=False, log=lambda _: None)
    monkeypatch.setattr(generator_training, "_distill_loss", real)
    again = train_shapes_echomod(out, often, progress=False, log=lambda _: None)
    assert again["resumed"] == [{"stage": "tiny_vae", "step": 2}]
    assert again["losses"] == summary["losses"] and _same_weights(first, out)


def test_a_checkpoint_of_other_settings_is_refused_and_kept(tmp_path, cli, monkeypatch):
    import dataclasses

    from echobench.echoalign import generator_training

    def crashing(*args):
        raise RuntimeError("stop here")

    monkeypatch.setattr(generator_training, "_eps_loss", crashing)  # after the VAE's checkpoints
    out = tmp_path / "em"
    with pytest.raises(RuntimeError):
        train_shapes_echomod(out, dataclasses.replace(QUICK, checkpoint_minutes=1e-9), progress=False, log=lambda _: None)
    saved = out.with_name("em.checkpoint").read_bytes()
    code, _, err = cli("train-echomod", "--out", out, "--n-train", 64, "--batch-size", 8, "--vae-steps", 3,
                       "--unet-steps", 4, "--controlnet-steps", 3, "--tiny-vae-steps", 3, "--warmup-steps", 1,
                       "--eval-images", 8)
    assert code == 2 and "other settings unet_steps" in err and "delete the checkpoint" in err
    assert out.with_name("em.checkpoint").read_bytes() == saved and not out.exists()


def test_continuing_needs_a_trained_folder(tmp_path, cli):
    code, _, err = cli("train-echomod", "--out", tmp_path / "new", "--init-from", tmp_path)
    assert code == 2 and "not a trained EchoMod folder" in err and not (tmp_path / "new").exists()


# --- eval-echomod: prompt accuracy -----------------------------------------------------------------

class _PromptFollower:
    """A stand-in UNet that predicts the noise exactly (zero) under one class's prompt and badly under
    every other prompt, so the diffusion classifier must answer that class for every image."""

    def __init__(self, unet, text, favourite):
        self.config, self.text, self.favourite = unet.config, text, favourite

    def eval(self):
        return self

    def __call__(self, noisy, t, encoder_hidden_states):
        import types

        import torch

        hit = torch.equal(encoder_hidden_states[0], self.text[self.favourite])
        return types.SimpleNamespace(sample=torch.zeros_like(noisy) if hit else torch.full_like(noisy, 3.0))


def test_prompt_accuracy_picks_the_prompt_with_the_smallest_noise_error():
    import dataclasses

    from echobench.data.shapes import load_shapes
    from echobench.echoalign.diffusion_configs import build_components
    from echobench.echoalign.generator_folder import prompt_embeddings
    from echobench.echoalign.prompt_accuracy import prompt_accuracy

    components = build_components("tiny", random_init=True, seed=0)
    text = prompt_embeddings(components, [f"a photo of {name}" for name in CLASS_NAMES])
    fake = dataclasses.replace(components, unet=_PromptFollower(components.unet, text, favourite=3))
    doc = prompt_accuracy(fake, n=40, world_seed=5, timesteps=(200, 600))
    labels = np.asarray(load_shapes(n_train=40, n_test=1, seed=5).train_labels)
    assert doc["accuracy"] == pytest.approx((labels == 3).mean()) and 0 < doc["accuracy"] < 1
    assert doc["accuracy_by_class"]["square"] == 1.0
    assert all(a == 0.0 for name, a in doc["accuracy_by_class"].items() if name != "square" and a is not None)
    assert doc["accuracy_by_timestep"] == {"200": doc["accuracy"], "600": doc["accuracy"]}
    # the right prompt's error is 1 (ε²) for squares and 10 (ε² + 9) for the rest; the empty prompt's always 10
    assert doc["mse_right"] == pytest.approx(1 + 9 * (labels != 3).mean(), rel=0.05)
    assert doc["mse_empty"] == pytest.approx(10, rel=0.05) and doc["text_gain"] > 0


def test_eval_echomod_measures_a_trained_folder(trained, cli):
    out, _ = trained
    code, text, _ = cli("eval-echomod", out, "--n", "12", "--timesteps", "100", "900", "--json")
    assert code == 0
    doc = json.loads(text)
    assert doc["trained_steps"] == {"vae": 3, "unet": 3, "controlnet": 3, "tiny_vae": 3}
    assert doc["n"] == 12 and list(doc["accuracy_by_timestep"]) == ["100", "900"] and 0 <= doc["accuracy"] <= 1
    assert doc["mse_right"] > 0 and doc["mse_empty"] > 0
    code, again, _ = cli("eval-echomod", out, "--n", "12", "--timesteps", "100", "900", "--json")
    assert json.loads(again) == doc  # the same noise for the same seed
    code, summary, _ = cli("eval-echomod", out, "--n", "12")
    assert code == 0 and "prompt accuracy" in summary and "chance 10.0%" in summary


@pytest.mark.parametrize("args, fragment", [(["--n", "0"], "at least one image"),
                                            (["--timesteps", "1000"], "timesteps must lie in [0, 1000)")])
def test_bad_evaluation_options_are_user_errors(trained, args, fragment, cli):
    code, _, err = cli("eval-echomod", trained[0], *args)
    assert code == 2 and fragment in err and "Traceback" not in err


# --- model=shapes: the trained generator shipped with echobench ------------------------------------

@pytest.fixture
def shipped(trained, tmp_path, monkeypatch):
    """The trained folder installed as the shipped `shapes` model (under a temporary TRAINED_DIR)."""
    import shutil

    from echobench.echoalign import diffusion_configs

    root = tmp_path / "trained"
    shutil.copytree(trained[0], root / "shapes")
    monkeypatch.setattr(diffusion_configs, "TRAINED_DIR", root)
    return root / "shapes"


def test_model_shapes_runs_the_shipped_weights_and_keys_them_by_digest(shipped, trained):
    from echobench.data.shapes import load_shapes
    from echobench.echoalign.diffusion import make_diffusion_modifier
    from echobench.echoalign.echomod import modifier_config

    world = load_shapes(n_train=4, n_test=1, seed=0)
    labels, seeds = np.array([0, 3, 5, 9]), np.arange(4)
    shipped_run = make_diffusion_modifier("eager", "shapes", list(CLASS_NAMES), 32, {"model": "shapes", "steps": 2}, "cpu")
    folder_run = make_diffusion_modifier("eager", "shapes", list(CLASS_NAMES), 32,
                                         {"model": "sd15", "base_model": str(trained[0] / "stable-diffusion"),
                                          "controlnet": str(trained[0] / "controlnet"), "resolution": 32, "steps": 2}, "cpu")
    assert np.array_equal(shipped_run.generate(world.train_images, labels, seeds),
                          folder_run.generate(world.train_images, labels, seeds))
    key = modifier_config("eager", "shapes", list(CLASS_NAMES), 32, {"model": "shapes", "steps": 2})
    assert key == shipped_run.config() and key["model"] == "shapes" and len(key["weights"]) == 16
    assert str(shipped) not in json.dumps(key)  # no installation path in the cache key
    tiny = modifier_config("eager", "shapes", list(CLASS_NAMES), 32, {"model": "shapes", "steps": 2, "vae": "trained"})
    assert tiny["vae"] == "trained" and tiny != key
    make_diffusion_modifier("eager", "shapes", list(CLASS_NAMES), 32, {"model": "shapes", "steps": 2, "vae": "trained"}, "cpu")


def test_retrained_weights_get_another_cache_key(shipped, tmp_path, monkeypatch):
    import shutil

    from echobench.echoalign import diffusion_configs
    from echobench.echoalign.echomod import modifier_config

    before = modifier_config("eager", "shapes", list(CLASS_NAMES), 32, {"model": "shapes"})
    other = tmp_path / "other"
    shutil.copytree(shipped, other / "shapes")
    weights = next((other / "shapes" / "controlnet").glob("*.safetensors"))
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(blob))
    monkeypatch.setattr(diffusion_configs, "TRAINED_DIR", other)
    assert modifier_config("eager", "shapes", list(CLASS_NAMES), 32, {"model": "shapes"})["weights"] != before["weights"]


def test_a_missing_shipped_model_and_foreign_checkpoints_are_user_errors(tmp_path, monkeypatch, cli):
    from echobench.echoalign import diffusion_configs

    monkeypatch.setattr(diffusion_configs, "TRAINED_DIR", tmp_path / "nothing")
    code, _, err = cli("modify", "shapes", "--noise", "symmetric:0.3", "--dataset-option", "n_train=20",
                       "--dataset-option", "n_test=5", "--engine", "eager", "--engine-option", "model=shapes")
    assert code == 2 and "not in this installation" in err and "scripts/train_echomod_shapes.sh" in err
    code, _, err = cli("modify", "shapes", "--noise", "symmetric:0.3", "--engine", "eager",
                       "--engine-option", "model=shapes", "--engine-option", "base_model=/elsewhere")
    assert code == 2 and "leave base_model and controlnet out" in err
    code, _, err = cli("modify", "shapes", "--noise", "symmetric:0.3", "--engine", "eager",
                       "--engine-option", "model=tiny", "--engine-option", "vae=trained")
    assert code == 2 and "vae=trained" in err


def test_echoselect_takes_the_trained_models_calibrated_tau(shipped):
    from echobench.echoalign.methods import EchoAlignParams, resolve_tau

    learned = EchoAlignParams(engine="eager", engine_options={"model": "shapes"})
    assert resolve_tau(learned, 0.3, "shapes") == 0.86  # no calibration.json yet: the extractor's default
    (shipped / "calibration.json").write_text(json.dumps({"taus": {"shapes-hog": [0.61, 0.64]}}))
    assert (resolve_tau(learned, 0.3, "shapes"), resolve_tau(learned, 0.5, "shapes")) == (0.61, 0.64)
    assert resolve_tau(EchoAlignParams(), 0.3, "shapes") == 0.86  # the procedural engine keeps the extractor's
    assert resolve_tau(EchoAlignParams(engine="eager", engine_options={"model": "shapes"}, extractor="open_clip"),
                       0.3, "shapes") == 0.4  # no calibration for that extractor
    assert resolve_tau(EchoAlignParams(engine="eager", engine_options={"model": "shapes"}, tau=0.7), 0.3, "shapes") == 0.7


def test_the_calibration_script_takes_youden_taus_on_the_training_world(shipped, monkeypatch, capsys):
    """scripts/calibrate_generator_tau.py, at a size that runs in seconds, on the stand-in shipped
    model: world 777 (not the benchmark's 0), both noise levels, calibration.json beside the weights,
    which `resolve_tau` then uses."""
    import importlib.util
    import sys
    from pathlib import Path

    from echobench.echoalign.methods import EchoAlignParams, resolve_tau

    path = Path(__file__).resolve().parents[1] / "scripts" / "calibrate_generator_tau.py"
    spec = importlib.util.spec_from_file_location("calibrate_generator_tau", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["calibrate", "--engine-option", "steps=2", "--n-train", "60", "--no-progress"])
    assert script.main() == 0
    doc = json.loads((shipped / "calibration.json").read_text())
    assert doc["world"] == {"seed": 777, "n_train": 60} and set(doc["measured"]) == {"instance:0.3", "instance:0.5"}
    low, high = doc["taus"]["shapes-hog"]
    assert [low, high] == [doc["measured"][n]["youden_tau"] for n in ("instance:0.3", "instance:0.5")]
    assert doc["engine_options"] == {"model": "shapes", "steps": 2} and "--n-train 60" in doc["command"]
    learned = EchoAlignParams(engine="eager", engine_options={"model": "shapes"})
    assert (resolve_tau(learned, 0.3, "shapes"), resolve_tau(learned, 0.5, "shapes")) == (low, high)
