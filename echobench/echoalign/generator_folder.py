"""A folder that `echobench train-echomod` wrote (`generator_training.train_shapes_echomod`): its training
record, its models, and the prompt embeddings both training and evaluation compute.

Shared by `echobench.echoalign.generator_training` (which writes and continues such folders) and
`echobench.echoalign.prompt_accuracy` (which measures them), so that neither imports the other's
internals. The folder's layout:

    stable-diffusion/   model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/
    controlnet/         config.json + weights
    tiny-vae/           AutoencoderTiny (config.json + weights)
    training.json       the config, the loss curve of every stage, the environment
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from echobench.errors import EchobenchError

STAGES = ("vae", "unet", "controlnet", "tiny_vae")


def load_summary(folder: str | os.PathLike) -> dict[str, Any]:
    """training.json of a trained folder (an EchobenchError if it is not one)."""
    path = Path(folder) / "training.json"
    if not path.is_file():
        raise EchobenchError(f"{folder} is not a trained EchoMod folder (no training.json): "
                             "make one with `echobench train-echomod --out FOLDER`")
    return json.loads(path.read_text())


def total_steps(summary: dict[str, Any]) -> dict[str, int]:
    """Steps per stage over a folder's whole history: its own and those of the folders it continued."""
    total = dict.fromkeys(STAGES, 0)
    while summary:
        for stage in STAGES:
            total[stage] += summary["config"][f"{stage}_steps"]
        summary = summary.get("previous")
    return total


def load_trained(folder: str | os.PathLike):
    """(components, tiny VAE) of a trained folder, float32 on the CPU."""
    import torch

    from echobench.echoalign.diffusion import DiffusionConfig, load_components, load_tiny_vae

    folder = Path(folder)
    config = DiffusionConfig(base_model=str(folder / "stable-diffusion"), controlnet=str(folder / "controlnet"))
    return load_components(config, "cpu", torch.float32), load_tiny_vae(str(folder / "tiny-vae"), "cpu", torch.float32)


def prompt_embeddings(components, prompts: list[str]):
    """Text-encoder outputs (len(prompts) + 1, 77, D): the class prompts, then the empty prompt."""
    import torch

    tokens = components.tokenizer(prompts + [""], padding="max_length", truncation=True,
                                  max_length=components.tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        return components.text_encoder(tokens.input_ids)[0]
