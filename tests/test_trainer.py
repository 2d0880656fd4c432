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


# --- the one CE epoch loop -------------------------------------------------------------------------------

def _random_task(n: int = 96, classes: int = 3, side: int = 8):
    """A Task on random uint8 images (the loop's mechanics, not learning)."""
    import numpy as np

    from echobench.training.protocols import get_protocol
    from echobench.training.trainer import DeviceSplit, History, Normalizer, Task

    rng = np.random.default_rng(0)
    device = torch.device("cpu")

    def split(m: int, offset: int) -> DeviceSplit:
        images = rng.integers(0, 256, (m, side, side, 3), dtype=np.uint8)
        return DeviceSplit.from_numpy(images, rng.integers(0, classes, m), np.arange(offset, offset + m), device)

    protocol = get_protocol("smoke", {"epochs": 4, "crop_padding": 1})
    return Task("random", classes, [str(c) for c in range(classes)], split(n, 0), split(32, n), split(32, n + 32),
                protocol, device, 0, "symmetric", 0.3, Normalizer(np.full(3, 0.5), np.full(3, 0.25), device), History())


def test_train_epochs_records_each_epoch_with_its_stage():
    from echobench.training.trainer import train_epochs

    task = _random_task()
    model = task.new_model()
    optimizer = task.new_optimizer(model.parameters())
    run = train_epochs(task, model, optimizer, task.generator("batches"), 3, first_epoch=5, stage=1,
                       number_stage_epochs=True)
    assert run.last_epoch == 8 and run.kept_epoch == 3 and run.val_accs == []
    assert [r.epoch for r in task.history.records] == [6, 7, 8]
    assert [r.extra for r in task.history.records] == [{"stage": 1.0, "stage_epoch": float(e)} for e in (1, 2, 3)]


def test_train_epochs_keeps_the_best_validation_epoch_without_recording():
    from echobench.training.trainer import model_state, train_epochs

    task = _random_task()
    model = task.new_model()
    optimizer = task.new_optimizer(model.parameters())
    states = []
    real_accuracy = task.accuracy

    def accuracy(m, split):  # validation accuracies 0.5, 0.9, 0.9, 0.1: the first best is epoch 2
        states.append(model_state(m))
        return [0.5, 0.9, 0.9, 0.1][len(states) - 1] if split is task.val else real_accuracy(m, split)

    task.accuracy = accuracy
    run = train_epochs(task, model, optimizer, task.generator("batches"), 4, record=False, keep="best_val")
    assert run.kept_epoch == 2 and run.val_accs == [0.5, 0.9, 0.9, 0.1] and not task.history.records
    assert all(torch.equal(v, states[1][k]) for k, v in model.state_dict().items())


def test_train_epochs_is_the_loop_of_a_plain_ce_run():
    """The same epochs written out by hand (Task.train_epoch, then the scheduler) give the same weights."""
    import torch.nn.functional as F

    from echobench.training.trainer import train_epochs

    task = _random_task()
    a, b = task.new_model(), task.new_model()
    opt_a, opt_b = task.new_optimizer(a.parameters()), task.new_optimizer(b.parameters())
    sched_a, sched_b = task.new_scheduler(opt_a), task.new_scheduler(opt_b)
    train_epochs(task, a, opt_a, task.generator("batches"), 2, scheduler=sched_a, record=False)
    generator = task.generator("batches")
    for _ in range(2):
        task.train_epoch(b, opt_b, generator, lambda logits, y, idx: F.cross_entropy(logits, y))
        sched_b.step()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_an_unknown_keep_rule_is_a_user_error():
    from echobench.errors import EchobenchError
    from echobench.training.trainer import train_epochs

    task = _random_task()
    model = task.new_model()
    with pytest.raises(EchobenchError, match="keep must be"):
        train_epochs(task, model, task.new_optimizer(model.parameters()), task.generator("b"), 1, keep="best_test")


# --- the protocol's execution fields: the last partial batch, the compiled step -------------------------

def test_execution_fields_at_their_defaults_leave_the_canonical_protocol_as_it_was():
    """Run ids hash the protocol's `to_dict`: `last_batch` and `compile` appear in it only when changed."""
    from echobench.errors import EchobenchError
    from echobench.training.protocols import Protocol, get_protocol

    paper = get_protocol("paper").to_dict()
    assert "last_batch" not in paper and "compile" not in paper
    assert Protocol(**{**paper, "milestones": tuple(paper["milestones"])}) == get_protocol("paper")
    dropped = get_protocol("paper", {"last_batch": "drop"}).to_dict()
    assert dropped["last_batch"] == "drop" and "compile" not in dropped
    compiled = get_protocol("paper-compiled")
    assert (compiled.compile, compiled.last_batch) == (True, "drop") and compiled.to_dict()["compile"] is True
    with pytest.raises(EchobenchError, match="compile: true needs last_batch: drop"):
        get_protocol("paper", {"compile": True})
    with pytest.raises(EchobenchError, match="last_batch must be keep or drop"):
        get_protocol("paper", {"last_batch": "pad"})


def test_last_batch_drop_drops_the_partial_batch_unless_it_is_the_only_one():
    import dataclasses

    from echobench.training.trainer import cross_entropy_loss

    for n, last_batch, expected in ((100, "keep", 100), (100, "drop", 96), (20, "drop", 20)):
        task = _random_task(n=n)  # batches of 32
        task.protocol = dataclasses.replace(task.protocol, last_batch=last_batch)
        model = task.new_model()
        sizes = [len(y) for _, y, _ in task.batches(task.train, task.generator("b"))]
        assert sum(sizes) == expected and (last_batch == "keep" or len(set(sizes)) == 1)
        _, _, seen = task.train_epoch(model, task.new_optimizer(model.parameters()), task.generator("b"), cross_entropy_loss)
        assert seen == expected


@pytest.mark.slow  # inductor compiles the forward, backward and optimizer step: ~30 s on one CPU thread
def test_the_compiled_step_trains_as_the_eager_step():
    """Two epochs compiled and eager from the same seeds: the same batches, losses and weights up to float
    rounding (fused kernels). On CPU torch.compile needs a C++ compiler."""
    import dataclasses

    from echobench.training.trainer import cross_entropy_loss

    out = {}
    for compiled in (False, True):
        task = _random_task(n=100)
        task.protocol = dataclasses.replace(task.protocol, last_batch="drop", compile=compiled)
        model = task.new_model()
        optimizer = task.new_optimizer(model.parameters())
        generator = task.generator("batches")
        sums = [task.train_epoch(model, optimizer, generator, cross_entropy_loss) for _ in range(2)]
        out[compiled] = ([(float(loss), int(correct), seen) for loss, correct, seen in sums],
                         torch.cat([p.detach().flatten() for p in model.parameters()]))
    (eager_sums, eager_w), (comp_sums, comp_w) = out[False], out[True]
    assert [s[1:] for s in eager_sums] == [s[1:] for s in comp_sums]
    assert [s[0] for s in comp_sums] == pytest.approx([s[0] for s in eager_sums], rel=1e-4)
    assert torch.allclose(comp_w, eager_w, atol=1e-5)
