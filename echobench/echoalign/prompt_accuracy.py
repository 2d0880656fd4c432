"""Does a text-to-image diffusion model draw what its prompt says? Its prompt accuracy, measured as a
diffusion classifier.

EchoMod works only if the generator follows the noisy label's prompt: a ControlNet keeps the
original's outline, and the prompt must carry the class. For the `shapes` model that
`echobench train-echomod` trains, whether the UNet learned the classes from their prompts is the
question that decides whether EchoSelect can separate clean from noisy labels on its pairs
(reports/approx-shapes/). This module answers it without sampling a single image.

The method is the diffusion classifier of Li et al. 2023 ("Your Diffusion Model is Secretly a
Zero-Shot Classifier", ICCV, §3) and Clark & Jaini 2023 ("Text-to-Image Diffusion Models are Zero-Shot
Classifiers"): noise an image's latent to timestep t, let the UNet predict the noise under each class
prompt, and predict the class whose prompt gives the smallest ε error, summed over a few timesteps.
As in Li et al., every class sees the same noise and timesteps for a given image (their paired
evaluation), so the comparison between prompts is free of sampling noise. Deviation: a fixed handful
of mid-range timesteps (default 300, 500, 700 of SD's 1000) instead of their adaptive schedule over
hundreds of trials; enough to tell a model that ignores its prompt (chance: 1 / classes) from one
that follows it.

The images are a held-out `shapes` world (its own seed: neither the training world, 777, nor the
runs' world, 0), encoded with the model's VAE (posterior mean × scaling factor), as in training.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from echobench.errors import EchobenchError

DEFAULT_N = 256
DEFAULT_WORLD_SEED = 778  # a world of its own: training uses 777, the runs 0
DEFAULT_TIMESTEPS = (300, 500, 700)


def prompt_accuracy(components, *, n: int = DEFAULT_N, world_seed: int = DEFAULT_WORLD_SEED,
                    timesteps: Sequence[int] = DEFAULT_TIMESTEPS, seed: int = 0, image_size: int = 32,
                    batch_size: int = 64, prompt_template: str = "a photo of {}",
                    progress: bool = False) -> dict[str, Any]:
    """The diffusion-classifier accuracy of `components` (unet, vae, text_encoder, tokenizer,
    scheduler; float32 on the CPU) on `n` images of `shapes` world `world_seed`.

    Returns: accuracy (argmin of the ε error summed over `timesteps`), accuracy per timestep and per
    class, chance, and the mean ε MSE with the right prompt, a wrong one (each other class, averaged)
    and the empty prompt; `text_gain` = 1 − right / empty is the share of the ε error the prompt
    removes. `progress`: a bar over the images, with rate and ETA, on stderr."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from echobench.data.shapes import CLASS_NAMES, load_shapes
    from echobench.echoalign.generator_folder import prompt_embeddings

    if n < 1:
        raise EchobenchError(f"prompt accuracy needs at least one image (got n={n})")
    if not timesteps:
        raise EchobenchError("prompt accuracy needs at least one timestep")
    horizon = components.scheduler.config.num_train_timesteps
    if any(not 0 <= t < horizon for t in timesteps):
        raise EchobenchError(f"timesteps must lie in [0, {horizon}) (got {list(timesteps)})")
    classes = len(CLASS_NAMES)
    world = load_shapes(n_train=n, n_test=1, seed=world_seed, image_size=image_size)
    labels = np.array(world.train_labels, dtype=np.int64)  # a writable copy: torch reads it
    pixels = torch.from_numpy(np.asarray(world.train_images).copy()).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    text = prompt_embeddings(components, [prompt_template.format(name) for name in CLASS_NAMES])  # + the empty prompt
    unet, vae, scheduler = components.unet.eval(), components.vae.eval(), components.scheduler
    generator = torch.Generator().manual_seed(seed)
    errors = torch.zeros(len(timesteps), n, classes + 1)  # ε MSE per timestep, image and prompt (last: empty)
    bar = tqdm(total=n, desc="prompt accuracy", unit="img", disable=not progress)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            part = slice(start, min(n, start + batch_size))
            latents = vae.encode(pixels[part]).latent_dist.mean * vae.config.scaling_factor
            for i, t in enumerate(timesteps):
                noise = torch.randn(latents.shape, generator=generator)  # shared by every prompt: paired
                step = torch.full((len(latents),), int(t))
                noisy = scheduler.add_noise(latents, noise, step)
                for c in range(classes + 1):
                    prediction = unet(noisy, step, encoder_hidden_states=text[c].expand(len(latents), -1, -1)).sample
                    errors[i, part, c] = (prediction - noise).pow(2).mean(dim=(1, 2, 3))
            bar.update(len(latents))
    bar.close()
    class_errors = errors[..., :classes]
    predicted = class_errors.sum(0).argmin(1).numpy()
    right = class_errors.gather(2, torch.from_numpy(labels)[None, :, None].expand(len(timesteps), n, 1)).squeeze(2)
    wrong = (class_errors.sum(2) - right) / (classes - 1)
    empty = errors[..., classes]
    return {
        "n": n, "world_seed": world_seed, "timesteps": [int(t) for t in timesteps], "seed": seed,
        "chance": 1.0 / classes,
        "accuracy": float((predicted == labels).mean()),
        "accuracy_by_timestep": {str(t): float((class_errors[i].argmin(1).numpy() == labels).mean())
                                 for i, t in enumerate(timesteps)},
        "accuracy_by_class": {name: float((predicted[labels == c] == c).mean()) if (labels == c).any() else None
                              for c, name in enumerate(CLASS_NAMES)},
        "mse_right": float(right.mean()), "mse_wrong": float(wrong.mean()), "mse_empty": float(empty.mean()),
        "text_gain": float(1.0 - right.mean() / empty.mean()),
    }


def folder_prompt_accuracy(folder: str | os.PathLike, **options) -> dict[str, Any]:
    """`prompt_accuracy` of a folder `echobench train-echomod` wrote, with its training record's
    image size and step counts alongside."""
    from echobench.echoalign.generator_folder import load_summary, load_trained, total_steps

    summary = load_summary(folder)
    components, _ = load_trained(folder)
    result = prompt_accuracy(components, image_size=summary["config"]["image_size"], **options)
    return {"folder": str(folder), "trained_steps": total_steps(summary), **result}


def format_prompt_accuracy(doc: dict[str, Any]) -> str:
    steps = doc.get("trained_steps")
    trained = "" if not steps else " (trained: " + ", ".join(f"{k} {v:,}" for k, v in steps.items()) + " steps)"
    by_t = ", ".join(f"t={t}: {a:.1%}" for t, a in doc["accuracy_by_timestep"].items())
    by_class = ", ".join(f"{name} {a:.0%}" for name, a in doc["accuracy_by_class"].items() if a is not None)
    return "\n".join([
        f"{doc.get('folder', 'model')}{trained}",
        f"prompt accuracy {doc['accuracy']:.1%} on {doc['n']} images of shapes world {doc['world_seed']} "
        f"(chance {doc['chance']:.1%}; ε error summed over t = {', '.join(map(str, doc['timesteps']))})",
        f"  per timestep: {by_t}",
        f"  per class:    {by_class}",
        f"ε MSE: right prompt {doc['mse_right']:.5f}, wrong {doc['mse_wrong']:.5f}, empty {doc['mse_empty']:.5f} "
        f"(the prompt removes {doc['text_gain']:.2%} of the error)",
    ])
