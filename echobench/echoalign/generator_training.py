"""Train EchoMod's diffusion model for the embedded `shapes` world: a small SD + canny ControlNet.

The paper's EchoMod (§4.1, appendix C) is Stable Diffusion 1.5 with the canny ControlNet, models
trained on web-scale data that never saw the noisy dataset. `shapes` has no such model, and no
download is possible here, so this module trains one, at the `tiny` architecture of
`echobench.echoalign.diffusion_configs`, on an independent `shapes` world (its own seed, clean labels: the
"web data" whose captions are right), following the recipes of the two papers in their order:

1. **VAE** (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"
   §3.1): an `AutoencoderKL` trained on reconstruction with a weak KL term (their kl_weight 1e-6).
   Deviation: an L1 loss only, without their LPIPS and patch-GAN terms (neither pre-trained network
   is available offline; at 32 px the L1 reconstructions are already sharp). The latent scaling
   factor is 1 / std of the training latents, computed the way SD's 0.18215 was.
2. **UNet** (ibid. §3.3, SD 1.5's model card): ε-prediction with SD 1.5's noise schedule (the
   scaled-linear betas of `SD15_SCHEDULER_CONFIG`, 1000 steps), conditioned on the frozen text
   encoder's embedding of "a photo of {class}"; 10% of the prompts are dropped to the empty prompt,
   as SD 1.5 was trained, so that classifier-free guidance works. The text encoder is the tiny
   model's seeded random CLIP text tower, frozen: like CLIP in SD, it is never trained with the
   UNet, and its embeddings of the ten prompts differ, which is all the UNet needs.
3. **ControlNet** (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion
   Models" §3.2–3.3): a copy of the UNet's encoder (`ControlNetModel.from_unet`: zero convolutions,
   the UNet frozen), trained with the same ε loss on canny edges of the training image, made
   exactly as EchoMod makes them at inference (`control_images`, thresholds 75/75); 50% of the
   prompts are replaced by the empty prompt, as in the paper, so the edges alone must carry the
   structure.
4. **Tiny VAE** (the approximate decoder of `DiffusionConfig.vae`, like TAESD for SD): an
   `AutoencoderTiny` of two blocks (the VAE's factor 2) distilled from the VAE: its decoder maps the
   scaled latents to what the VAE decodes from them, its encoder maps images to the VAE's scaled
   latent means. Deviation from TAESD: no adversarial loss.

Deviations from both papers' optimisers, for training on a CPU in minutes: AdamW at 1e-3 (VAE,
tiny VAE) and 5e-4 (UNet, ControlNet) with a linear warm-up of 100 steps, instead of their
1e-4/1e-5; no EMA of the weights. Everything is deterministic on the CPU for a given seed and
thread count: `np.random.Generator`s choose the batches, torch generators the noise.

How good the model is: its prompt accuracy (a diffusion classifier, `echobench.echoalign.prompt_accuracy`,
recorded in training.json) and how well EchoSelect separates clean from noisy labels on its pairs,
at the defaults and continued with `init_from`, with the training times, are measured in
reports/approx-shapes/README.md; the model continued longest there is the one `echobench bench approx`
measures approximate settings against.

Interrupted training resumes. Every `checkpoint_minutes` of training, and when interrupted (Ctrl-C),
the run's whole state is written to `OUT.checkpoint` (written to a temporary name, then renamed): the
weights, the optimiser and learning-rate schedule of the current stage, the batch order and every
random generator. The same command run again continues from it, to the same weights as an
uninterrupted run (CPU, same thread count); the record lists where it resumed. A model that takes
hours (the 16,000-step one of reports/approx-shapes) can so be trained in pieces, whenever the machine
is free. A checkpoint made with other settings is refused, not mixed in.

The output folder has the layouts the real checkpoints use (`echobench.echoalign.generator_folder`
lists them and reads them back), so EchoMod loads it with the sd15 route (local folders as
`base_model` and `controlnet`, `resolution=32`), and `vae=` points at the tiny VAE.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from echobench.echoalign.generator_folder import STAGES, load_summary, load_trained, prompt_embeddings
from echobench.errors import EchobenchError

if TYPE_CHECKING:
    import numpy as np

# numpy, torch and diffusers are imported inside the functions: the command line builds its parser
# from TrainingConfig, and `echobench --help` should not pay for them.


@dataclass(frozen=True)
class TrainingConfig:
    """What the trained model depends on. `world_seed` must differ from the worlds EchoMod is then
    used on (the runs use world seed 0), as SD's training data is not the noisy dataset."""

    world_seed: int = 777
    n_train: int = 10000
    image_size: int = 32
    seed: int = 0
    batch_size: int = 64
    vae_steps: int = 600
    unet_steps: int = 2000
    controlnet_steps: int = 1000
    tiny_vae_steps: int = 300
    vae_lr: float = 1e-3
    unet_lr: float = 5e-4
    controlnet_lr: float = 5e-4
    tiny_vae_lr: float = 1e-3
    warmup_steps: int = 100
    kl_weight: float = 1e-6
    text_dropout: float = 0.1
    control_text_dropout: float = 0.5
    canny_low: int = 75
    canny_high: int = 75
    eval_images: int = 256  # prompt accuracy on this many held-out images after training (0: skip)
    # how often the resumable state is saved; not part of what the model depends on (see `fingerprint`)
    checkpoint_minutes: float = 5.0

    def __post_init__(self) -> None:
        problems = []
        for name in ("n_train", "batch_size", "image_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.image_size % 8:
            problems.append(f"image_size must be a multiple of 8 (got {self.image_size})")
        for name in ("vae_steps", "unet_steps", "controlnet_steps", "tiny_vae_steps", "warmup_steps", "seed", "world_seed",
                     "eval_images"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0 (got {getattr(self, name)})")
        for name in ("text_dropout", "control_text_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must lie in [0, 1] (got {getattr(self, name)})")
        if not self.checkpoint_minutes > 0:
            problems.append(f"checkpoint_minutes must be > 0 (got {self.checkpoint_minutes})")
        if problems:
            raise EchobenchError("EchoMod training config: " + "; ".join(problems))

    def fingerprint(self) -> dict[str, Any]:
        """The fields the trained weights depend on (all but how often a checkpoint is saved)."""
        fields = dataclasses.asdict(self)
        fields.pop("checkpoint_minutes")
        return fields


def train_shapes_echomod(out: str | os.PathLike, config: TrainingConfig = TrainingConfig(), *,
                         init_from: str | os.PathLike | None = None, progress: bool = True,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the four models of the module docstring and save them under `out` (written to a
    temporary sibling folder and renamed, so `out` is complete or absent). Returns training.json's
    content. An existing `out` is an error: nothing is overwritten. An `OUT.checkpoint` left by an
    interrupted run with the same settings is resumed (module docstring).

    `init_from`: a folder this function wrote; training continues from its weights for the steps of
    `config` (0 steps keep a model as it is; with `vae_steps=0` its latent scaling factor is kept,
    otherwise the ControlNet and the tiny VAE would no longer match the latents). Its training.json
    is kept in the new one under "previous"."""
    out = Path(out)
    if out.exists():
        raise EchobenchError(f"{out} already exists: choose another --out or remove it first")
    previous = load_summary(init_from) if init_from is not None else None
    if previous is not None and previous["config"]["image_size"] != config.image_size:
        raise EchobenchError(f"{init_from} was trained at image_size {previous['config']['image_size']}, "
                             f"not {config.image_size}")
    checkpoint = _Checkpoint(out, {"config": config.fingerprint(), "init_from": previous}, config.checkpoint_minutes)
    with _deferred_interrupts() as stop:  # one flag for all stages: a stop between two is seen by the next
        return _train(out, config, init_from, previous, checkpoint, stop, progress, log)


def _train(out: Path, config: TrainingConfig, init_from, previous: dict[str, Any] | None, checkpoint: "_Checkpoint",
           stop: threading.Event, progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    import numpy as np
    import torch

    from echobench.data.shapes import CLASS_NAMES, load_shapes
    from echobench.echoalign.diffusion_configs import build_components
    from echobench.environment import environment

    resume = checkpoint.load()
    if resume is not None:
        log(f"resuming from {checkpoint.path}: {resume['stage']} step {resume['step']}")
    world = load_shapes(n_train=config.n_train, n_test=1, seed=config.world_seed, image_size=config.image_size)
    images = np.asarray(world.train_images)
    labels = np.asarray(world.train_labels, dtype=np.int64)
    pixels = torch.from_numpy(images.copy()).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # [-1, 1], as SD
    rng = np.random.default_rng([config.seed, 0])
    torch.manual_seed(config.seed)
    if previous is None:
        components = build_components("tiny", random_init=True, seed=config.seed)
    else:
        components, tiny = load_trained(init_from)
    history: dict[str, Any] = dict(resume["history"]) if resume else {}
    modules: dict[str, Any] = {"vae": components.vae, "unet": components.unet}
    # the stage a resumed run is in, and the stages it finished (their weights come from the checkpoint)
    resume_stage = resume["stage"] if resume else None
    finished = STAGES[:STAGES.index(resume_stage)] if resume else ()
    checkpoint.started(resume)

    def fit(stage: str, module, steps: int, lr: float, loss_of) -> None:
        modules[stage] = module
        if resume is not None and stage in finished + (resume_stage,):
            module.load_state_dict(resume["modules"][stage])
        if stage in finished:
            return  # its curve is in `history` already
        state = resume if stage == resume_stage else None
        if state is not None:
            checkpoint.restore_generators(state)

        def save(fit_state: dict[str, Any], force: bool = False) -> None:
            checkpoint.save(stage, fit_state, modules, history, force=force)
            if force:
                log(f"stopped at {_LABELS[stage]} step {fit_state['step']}; its state is in {checkpoint.path}: "
                    "run the same command again to resume")

        history[stage] = _fit(module, steps, lr, config, rng, len(images), _LABELS[stage], loss_of, progress,
                              resume=state, save=save, stop=stop)

    vae = components.vae.train()
    fit("vae", vae, config.vae_steps, config.vae_lr, lambda idx: _vae_loss(vae, pixels[idx], config.kl_weight))
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        posterior = vae.encode(pixels).latent_dist
        mean, std = posterior.mean, posterior.std
    if previous is not None and config.vae_steps == 0:
        scaling = float(vae.config.scaling_factor)
    else:
        scaling = float(1.0 / posterior.sample(generator=torch.Generator().manual_seed(config.seed)).std())
    vae.register_to_config(scaling_factor=scaling)
    log(f"VAE latent scaling factor {scaling:.4f} (SD 1.5's is 0.18215)")

    text = prompt_embeddings(components, [f"a photo of {name}" for name in CLASS_NAMES])
    scheduler = components.scheduler
    noise_gen = torch.Generator().manual_seed(config.seed + 1)
    checkpoint.generators["noise"] = noise_gen

    def latents(idx):
        eps = torch.randn(mean[idx].shape, generator=noise_gen)
        return (mean[idx] + std[idx] * eps) * scaling

    unet = components.unet.train()
    fit("unet", unet, config.unet_steps, config.unet_lr,
        lambda idx: _eps_loss(unet, None, scheduler, latents(idx),
                              _conditioning(text, labels[idx], config.text_dropout, rng), None, noise_gen))
    unet.eval().requires_grad_(False)

    import diffusers

    from echobench.echoalign.diffusion import control_images

    if previous is None:
        controlnet = diffusers.ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=tuple(components.controlnet.config.conditioning_embedding_out_channels))
    else:
        controlnet = components.controlnet
    control = torch.from_numpy(control_images(images, config.image_size, config.canny_low, config.canny_high))
    controlnet.train()
    fit("controlnet", controlnet, config.controlnet_steps, config.controlnet_lr,
        lambda idx: _eps_loss(unet, controlnet, scheduler, latents(idx),
                              _conditioning(text, labels[idx], config.control_text_dropout, rng), control[idx], noise_gen))
    controlnet.eval().requires_grad_(False)

    if previous is None:
        tiny = diffusers.AutoencoderTiny(
            encoder_block_out_channels=(32, 32), decoder_block_out_channels=(32, 32),
            num_encoder_blocks=(1, 2), num_decoder_blocks=(2, 1), latent_channels=vae.config.latent_channels)
    with torch.no_grad():
        targets_z = mean * scaling
    tiny.train()
    fit("tiny_vae", tiny, config.tiny_vae_steps, config.tiny_vae_lr,
        lambda idx: _distill_loss(tiny, vae, pixels[idx], targets_z[idx], scaling))
    tiny.eval()
    seconds = round(checkpoint.elapsed(), 1)
    accuracy = None
    if config.eval_images:
        from echobench.echoalign.prompt_accuracy import prompt_accuracy

        accuracy = prompt_accuracy(components, n=config.eval_images, image_size=config.image_size)
        log(f"prompt accuracy {accuracy['accuracy']:.1%} on {config.eval_images} held-out images "
            f"(chance {accuracy['chance']:.0%})")

    summary = {
        "config": config.fingerprint(),
        "scaling_factor": scaling,
        "seconds": seconds,
        "losses": history,
        "prompt_accuracy": accuracy,
        "parameters": {name: sum(p.numel() for p in module.parameters())
                       for name, module in (("unet", unet), ("controlnet", controlnet), ("vae", vae),
                                            ("text_encoder", components.text_encoder), ("tiny_vae", tiny))},
        "environment": environment("cpu"),
        **({"resumed": checkpoint.resumed} if checkpoint.resumed else {}),
        **({"init_from": str(init_from), "previous": previous} if previous is not None else {}),
    }
    _save(out, components, unet, controlnet, vae, tiny, summary)
    checkpoint.remove()
    return summary


_LABELS = {"vae": "VAE", "unet": "UNet", "controlnet": "ControlNet", "tiny_vae": "tiny VAE"}


class _Checkpoint:
    """`OUT.checkpoint`: the resumable state of an unfinished `train_shapes_echomod(OUT, ...)`.

    `identity` (the config's fingerprint and the continued folder's record) must match for a resume;
    `save` writes every `minutes` (and when forced) through a temporary name; `elapsed` counts the
    training seconds of every piece."""

    def __init__(self, out: Path, identity: dict[str, Any], minutes: float):
        self.path = out.with_name(out.name + ".checkpoint")
        self.identity = json.loads(json.dumps(identity))  # as it reads back
        self.every_s = 60.0 * minutes
        self.generators: dict[str, Any] = {}  # torch generators made during training, saved by name
        self.resumed: list[dict[str, Any]] = []
        self._before = 0.0  # training seconds of earlier pieces
        self._start = self._last = time.perf_counter()

    def load(self) -> dict[str, Any] | None:
        import torch

        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # a checkpoint is written through a temporary name, so this is damage
            raise EchobenchError(f"{self.path} cannot be read ({error}): delete it to start the training over") from None
        if state.get("identity") != self.identity:
            ours, theirs = self.identity["config"], (state.get("identity") or {}).get("config", {})
            differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            what = f"settings {', '.join(differ)}" if differ else "--init-from folder"
            raise EchobenchError(f"{self.path} belongs to a training run with other {what}: rerun that command to "
                                 "resume it, or delete the checkpoint to start this one over")
        return state

    def started(self, resume: dict[str, Any] | None) -> None:
        if resume is not None:
            self._before = resume["elapsed"]
            self.resumed = resume["resumed"] + [{"stage": resume["stage"], "step": resume["step"]}]
        self._start = self._last = time.perf_counter()

    def elapsed(self) -> float:
        return self._before + time.perf_counter() - self._start

    def restore_generators(self, state: dict[str, Any]) -> None:
        """torch's random generators as they were when `state` was saved (`_fit` restores numpy's)."""
        import torch

        torch.set_rng_state(state["torch"])
        for name, generator_state in state["generators"].items():
            self.generators[name].set_state(generator_state)

    def save(self, stage: str, fit_state: dict[str, Any], modules: dict[str, Any], history: dict[str, Any],
             force: bool = False) -> None:
        import torch

        now = time.perf_counter()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        state = {"identity": self.identity, "stage": stage, **fit_state, "history": dict(history),
                 "modules": {name: module.state_dict() for name, module in modules.items()},
                 "torch": torch.get_rng_state(),
                 "generators": {name: g.get_state() for name, g in self.generators.items()},
                 "elapsed": self.elapsed(), "resumed": self.resumed}
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save(state, partial)
        partial.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def _deferred_interrupts():
    """Ctrl-C and SIGTERM set a flag instead of raising, so that training stops between two steps with
    a consistent state to save (`_fit`). Only the main thread can take signals; elsewhere the flag
    never sets and an interrupt raises as usual."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in handlers:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _fit(module, steps: int, lr: float, config: TrainingConfig, rng: np.random.Generator, n: int, label: str,
         loss_of: Callable[[np.ndarray], Any], progress: bool, *, resume: dict[str, Any] | None = None,
         save: Callable[..., None] = lambda state, force=False: None,
         stop: threading.Event | None = None) -> list[list[float]]:
    """`steps` AdamW steps on batches drawn without replacement (a new permutation per epoch);
    returns [step, mean loss of the last 50 steps] every 50 steps and at the end.

    After every step, `save(state)` is offered the stage's state (the checkpoint decides whether to
    write it); when `stop` is set, the state is saved with `force=True` and the run ends with a
    KeyboardInterrupt. `resume`, such a state, continues the stage from it."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    if steps == 0:
        return []
    params = [p for p in module.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, config.warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / warmup))
    order, position = rng.permutation(n), 0
    curve, window, done = [], [], 0
    if resume is not None:
        optimiser.load_state_dict(resume["optimiser"])
        schedule.load_state_dict(resume["schedule"])
        order, position, done = resume["order"].numpy(), resume["position"], resume["step"]
        curve, window = list(resume["curve"]), list(resume["window"])
        rng.bit_generator.state = resume["numpy"]

    def state(step: int) -> dict[str, Any]:
        return {"step": step, "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                "order": torch.from_numpy(order.copy()), "position": position, "curve": list(curve), "window": list(window),
                "numpy": rng.bit_generator.state}

    bar = tqdm(total=steps, initial=done, desc=f"train {label}", unit="step", disable=not progress, mininterval=2.0)
    for step in range(done + 1, steps + 1):
        if position + config.batch_size > n:
            order, position = rng.permutation(n), 0
        idx = np.sort(order[position:position + config.batch_size])
        position += config.batch_size
        loss = loss_of(idx)
        if not torch.isfinite(loss):
            raise EchobenchError(f"{label} training diverged at step {step} (loss {float(loss)}): lower its learning rate")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        window.append(float(loss.detach()))
        if step % 50 == 0 or step == steps:
            curve.append([step, round(float(np.mean(window)), 6)])
            bar.set_postfix(loss=f"{curve[-1][1]:.4f}")
            window = []
        bar.update(1)
        if step == steps:
            break  # a finished stage is not saved: a resume repeats only what follows the last checkpoint
        if stop is not None and stop.is_set():
            bar.close()
            save(state(step), force=True)
            raise KeyboardInterrupt
        save(state(step))
    bar.close()
    return curve


def _vae_loss(vae, x, kl_weight: float):
    posterior = vae.encode(x).latent_dist
    reconstruction = vae.decode(posterior.sample()).sample
    return (reconstruction - x).abs().mean() + kl_weight * posterior.kl().mean()


def _conditioning(text, labels: np.ndarray, dropout: float, rng: np.random.Generator):
    """Each label's prompt embedding, replaced by the empty prompt's (the last row) with probability `dropout`."""
    import numpy as np

    rows = np.where(rng.random(len(labels)) < dropout, len(text) - 1, labels)
    return text[rows]


def _eps_loss(unet, controlnet, scheduler, latents, text, control, generator):
    """SD's ε-prediction loss at uniformly drawn timesteps, through the ControlNet when given."""
    import torch

    noise = torch.randn(latents.shape, generator=generator)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
    noisy = scheduler.add_noise(latents, noise, t)
    residuals = {}
    if controlnet is not None:
        down, mid = controlnet(noisy, t, encoder_hidden_states=text, controlnet_cond=control, return_dict=False)
        residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
    prediction = unet(noisy, t, encoder_hidden_states=text, **residuals).sample
    return torch.nn.functional.mse_loss(prediction, noise)


def _distill_loss(tiny, vae, x, z_scaled, scaling: float):
    import torch

    with torch.no_grad():
        teacher = vae.decode(z_scaled / scaling).sample
    decoded = tiny.decode(z_scaled).sample
    encoded = tiny.encode(x).latents
    return (decoded - teacher).abs().mean() + torch.nn.functional.mse_loss(encoded, z_scaled)


def _save(out: Path, components, unet, controlnet, vae, tiny, summary: dict[str, Any]) -> None:
    import diffusers

    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    pipeline = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer, unet=unet,
        scheduler=components.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(partial / "stable-diffusion")
    controlnet.save_pretrained(partial / "controlnet")
    tiny.save_pretrained(partial / "tiny-vae")
    (partial / "training.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    partial.rename(out)
