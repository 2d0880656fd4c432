"""GPU check of the training loop (marker `gpu`; step `tests` of scripts/gpu_check.sh): an epoch of
`Task.train_epoch` never waits for the GPU. torch's sync debug mode turns every host synchronisation
(`.item()`, a blocking copy, `nonzero`, a stream sync) into an error, so a per-step sync anywhere in the
loop (batching, augmentation, step, the loss and accuracy sums) fails the test."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to torch")]


def test_the_epoch_loop_never_waits_for_the_gpu():
    from echobench.training.protocols import get_protocol
    from echobench.training.trainer import DeviceSplit, History, Normalizer, Task, cross_entropy_loss

    device = torch.device("cuda")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (200, 16, 16, 3), dtype=np.uint8)
    split = DeviceSplit.from_numpy(images, rng.integers(0, 4, 200), np.arange(200), device)
    task = Task("random", 4, list("abcd"), split, split, split, get_protocol("smoke", {"crop_padding": 2}), device, 0,
                "none", 0.0, Normalizer(np.full(3, 0.5), np.full(3, 0.25), device), History())
    model = task.new_model()
    optimizer = task.new_optimizer(model.parameters())
    generator = task.generator("batches")
    task.train_epoch(model, optimizer, generator, cross_entropy_loss)  # first steps: lazy initialisation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss_sum, correct, seen = task.train_epoch(model, optimizer, generator, cross_entropy_loss)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert seen == 200 and float(loss_sum) > 0 and 0 <= int(correct) <= 200  # read once, after the epoch
