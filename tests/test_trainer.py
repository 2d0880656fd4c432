import pytest
import torch

from echobench.training.networks import build_model
from echobench.training.trainer import augment


def test_crop_with_zero_padding_is_identity_and_offsets_shift():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).reshape(2, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, 0, False, g), x)
    out = augment(x, 2, False, torch.Generator().manual_seed(1))
    # Every output is a 6×6 window of the zero-padded input.
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_flip_flips_about_half_and_exactly():
    x = torch.randint(0, 255, (400, 3, 4, 4), dtype=torch.uint8)
    out = augment(x, 0, True, torch.Generator().manual_seed(0))
    flipped = torch.all((out == x.flip(-1)).flatten(1), dim=1) & ~torch.all((out == x).flatten(1), dim=1)
    same = torch.all((out == x).flatten(1), dim=1)
    assert torch.all(flipped | same)
    assert 150 < int(flipped.sum()) < 250


@pytest.mark.parametrize("name,classes", [("resnet18", 10), ("resnet34", 100), ("small-cnn", 10)])
def test_models_have_cifar_stem_and_output(name, classes):
    model = build_model(name, classes).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, classes)
    if name.startswith("resnet"):
        assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
        assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
        assert sum(p.numel() for p in model.parameters()) > (21e6 if name == "resnet34" else 11e6)


def test_channel_stats_in_chunks_match_the_direct_computation():
    import numpy as np

    from echobench.training.trainer import channel_stats

    x = np.random.default_rng(0).integers(0, 256, (500, 8, 8, 3), dtype=np.uint8)
    mean, std = channel_stats(x, chunk=37)
    ref = x.reshape(-1, 3) / 255.0
    assert np.allclose(mean, ref.mean(0), atol=1e-12) and np.allclose(std, ref.std(0), atol=1e-6)
