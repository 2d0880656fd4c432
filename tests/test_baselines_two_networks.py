"""Co-teaching, SIGUA and Co-Dis: the selection rules by hand, the shared loop, and tiny end-to-end runs."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from echobench.baselines.co_dis import CoDis, co_dis_loss, js_divergence, official_js_term
from echobench.baselines.co_teaching import CO_TEACHING_PROTOCOL, CoTeaching, CoTeachingCNN, co_teaching_cnn, co_teaching_loss
from echobench.baselines.sigua import Sigua, sigua_loss
from echobench.baselines.two_networks import (
    backward_each,
    co_teaching_adam_plan,
    forget_rate_schedule,
    num_remember,
    small_loss_selection,
)
from echobench.training.trainer import Task




def logits_for(probs):
    """Logits whose softmax is `probs` (rows sum to 1)."""
    return torch.log(torch.tensor(probs, dtype=torch.float64))


# --- selection rules ----------------------------------------------------------------------------------

def test_small_loss_selection_keeps_the_smallest_in_loss_order():
    losses = torch.tensor([0.3, 2.0, 0.1, 0.9, 5.0])
    assert small_loss_selection(losses, 0.4).tolist() == [2, 0, 3]  # keep ⌊0.6·5⌋ = 3
    assert small_loss_selection(losses, 0.2).tolist() == [2, 0, 3, 1]
    assert small_loss_selection(losses, 0.0).tolist() == [2, 0, 3, 1, 4]  # forget rate 0 keeps all


def test_small_loss_selection_breaks_ties_by_batch_position():
    losses = torch.tensor([1.0, 0.5, 0.5, 2.0, 0.5])
    assert small_loss_selection(losses, 0.6).tolist() == [1, 2]
    assert small_loss_selection(losses, 0.8).tolist() == [1]
    assert small_loss_selection(losses, 0.4).tolist() == [1, 2, 4]


def test_num_remember_floors_without_float_error_and_keeps_one():
    assert num_remember(128, 0.3) == 89  # ⌊89.6⌋, as the official int(remember_rate * n)
    assert num_remember(10, 0.8) == 2  # (1 - 0.8) * 10 = 1.9999999999999996 in floats
    assert num_remember(10, 0.9) == 1
    assert num_remember(3, 0.9) == 1  # never an empty kept set (official: 0/0)
    assert num_remember(7, 0.0) == 7
    assert num_remember(0, 0.5) == 0
    with pytest.raises(ValueError):
        num_remember(10, 1.5)


def test_forget_rate_schedule_values():
    assert forget_rate_schedule(0, 0.4) == 0.0
    assert forget_rate_schedule(5, 0.4) == pytest.approx(0.2)
    assert forget_rate_schedule(10, 0.4) == pytest.approx(0.4)
    assert forget_rate_schedule(20, 0.4) == pytest.approx(0.4)
    assert forget_rate_schedule(5, 0.4, num_gradual=10, exponent=2) == pytest.approx(0.1)
    assert forget_rate_schedule(3, 0.4, num_gradual=0) == pytest.approx(0.4)


def test_method_epochs_map_to_completed_epochs():
    class FakeTask:
        noise_rate = 0.5

    method = CoTeaching()
    assert method.epoch_forget_rate(1, FakeTask()) == 0.0  # the first epoch keeps every sample
    assert method.epoch_forget_rate(6, FakeTask()) == pytest.approx(0.25)
    assert method.epoch_forget_rate(11, FakeTask()) == pytest.approx(0.5)
    assert CoTeaching(CoTeaching.Params(forget_rate=0.2)).epoch_forget_rate(50, FakeTask()) == pytest.approx(0.2)


def test_co_teaching_adam_plan():
    plan = lambda e: co_teaching_adam_plan(e, lr=1e-3, epochs=200, decay_start=80)  # noqa: E731
    assert plan(1) == (1e-3, 0.9)
    assert plan(80) == (1e-3, 0.9)
    assert plan(81) == (pytest.approx(1e-3), 0.1)  # index 80: 120/120 · lr, β1 switched
    assert plan(141) == (pytest.approx(0.5e-3), 0.1)
    assert plan(200) == (pytest.approx(1e-3 / 120), 0.1)
    assert co_teaching_adam_plan(5, lr=1e-3, epochs=5, decay_start=80) == (1e-3, 0.9)


# --- the three losses -----------------------------------------------------------------------------------

def test_co_teaching_loss_trains_each_network_on_its_peers_picks():
    targets = torch.tensor([0, 0, 0, 0])
    # Network 1 is sure of samples 0 and 1, network 2 of samples 2 and 3.
    logits1 = logits_for([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8]])
    logits2 = logits_for([[0.4, 0.6], [0.1, 0.9], [0.95, 0.05], [0.7, 0.3]])
    loss1, loss2 = co_teaching_loss(logits1, logits2, targets, forget_rate=0.5)
    assert float(loss1) == pytest.approx(-(math.log(0.3) + math.log(0.2)) / 2)  # net 1 on net 2's picks {2, 3}
    assert float(loss2) == pytest.approx(-(math.log(0.4) + math.log(0.1)) / 2)  # net 2 on net 1's picks {0, 1}
    off1, off2 = co_teaching_loss(logits1, logits2, targets, forget_rate=0.5, official_loss_scale=True)
    assert float(off1) == pytest.approx(float(loss1) / 2) and float(off2) == pytest.approx(float(loss2) / 2)
    all1, _ = co_teaching_loss(logits1, logits2, targets, forget_rate=0.0)
    assert float(all1) == pytest.approx(float(F.cross_entropy(logits1, targets)))


def sigua_case():
    # CE of sample i is -log(p_i): ten distinct losses, sorted ascending by position.
    probs = torch.linspace(0.95, 0.05, 10, dtype=torch.float64)
    logits = torch.log(torch.stack([probs, 1 - probs], 1))
    return logits, torch.zeros(10, dtype=torch.long), -torch.log(probs)


def test_sigua_with_an_empty_ascent_set_is_the_plain_small_loss_mean():
    logits, targets, ce = sigua_case()
    # τ = 0.2: keep 8, forget 2, ⌊0.3 · 2⌋ = 0 ascent samples.
    loss = sigua_loss(logits, targets, forget_rate=0.2, sigua_rate=0.3, gamma=0.01)
    assert torch.isfinite(loss) and float(loss) == pytest.approx(float(ce[:8].mean()))
    # Nothing forgotten: the official code divides by an empty set here (NaN).
    loss0 = sigua_loss(logits, targets, forget_rate=0.0, sigua_rate=0.3, gamma=0.01)
    assert torch.isfinite(loss0) and float(loss0) == pytest.approx(float(ce.mean()))
    # The official one-sample minimum ascends on the 9th-smallest loss.
    official = sigua_loss(logits, targets, forget_rate=0.2, sigua_rate=0.3, gamma=0.01, official_min_one_ascent=True)
    assert float(official) == pytest.approx(float(ce[:8].mean() - 0.01 * ce[8]))


def test_sigua_ascends_on_the_samples_just_past_the_cut():
    logits, targets, ce = sigua_case()
    # τ = 0.5: keep 5, forget 5, ⌊0.4 · 5⌋ = 2 ascent samples (positions 5 and 6).
    loss = sigua_loss(logits, targets, forget_rate=0.5, sigua_rate=0.4, gamma=0.1)
    assert float(loss) == pytest.approx(float(ce[:5].mean() - 0.1 * ce[5:7].mean()))


def test_js_divergence_against_a_hand_computation():
    p, q = [0.5, 0.5], [0.9, 0.1]
    m = [0.7, 0.3]
    js = 0.5 * sum(a * math.log(a / b) for a, b in zip(p, m)) + 0.5 * sum(a * math.log(a / b) for a, b in zip(q, m))
    official = 0.5 * sum(b * math.log(b / a) for a, b in zip(p, m)) + 0.5 * sum(b * math.log(b / a) for a, b in zip(q, m))
    got = js_divergence(logits_for([p, p]), logits_for([q, p]))
    assert got.tolist() == pytest.approx([js, 0.0], abs=1e-12)
    assert float(official_js_term(logits_for([p]), logits_for([q]))) == pytest.approx(official)
    assert abs(js - official) > 1e-3  # the two forms really differ
    # Symmetric and bounded by log 2 (disjoint supports).
    far = js_divergence(torch.tensor([[30.0, -30.0]]), torch.tensor([[-30.0, 30.0]]))
    assert float(far) == pytest.approx(math.log(2), rel=1e-6)
    extreme = torch.tensor([[200.0, 0.0, -200.0]]), torch.tensor([[200.0, -200.0, 0.0]])
    assert torch.isfinite(js_divergence(*extreme)).all() and torch.isfinite(official_js_term(*extreme)).all()
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    assert torch.allclose(js_divergence(a, b), js_divergence(b, a))


def test_co_dis_ranks_by_ce_minus_lambda_js_and_exchanges():
    targets = torch.tensor([0, 0, 0])
    # Same CE for network 1 on samples 0 and 1 (p = 0.6); network 2 disagrees with it on sample 1 only.
    logits1 = logits_for([[0.6, 0.4], [0.6, 0.4], [0.1, 0.9]])
    logits2 = logits_for([[0.6, 0.4], [0.99, 0.01], [0.1, 0.9]])
    lam = 0.15
    js = js_divergence(logits1, logits2)
    score1 = F.cross_entropy(logits1, targets, reduction="none") - lam * js
    score2 = F.cross_entropy(logits2, targets, reduction="none") - lam * js
    loss1, loss2 = co_dis_loss(logits1, logits2, targets, forget_rate=0.5, co_lambda=lam)  # keep 1
    # Network 1 keeps sample 1 (the tie in CE is broken by the larger discrepancy), network 2 sample 1 too.
    assert float(loss1) == pytest.approx(float(score1[1]))
    assert float(loss2) == pytest.approx(float(score2[1]))
    # With λ = 0 the CE tie goes to the first position: network 2 trains on sample 0.
    _, plain2 = co_dis_loss(logits1, logits2, targets, forget_rate=0.5, co_lambda=0.0)
    assert float(plain2) == pytest.approx(-math.log(0.6))


def test_backward_each_gives_each_network_only_its_own_gradient():
    torch.manual_seed(0)
    net1, net2 = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    loss1, loss2 = co_dis_loss(net1(x), net2(x), y, forget_rate=0.25, co_lambda=0.5)
    own1 = torch.autograd.grad(loss1, net1.weight, retain_graph=True)[0]
    both1 = torch.autograd.grad(loss1 + loss2, net1.weight, retain_graph=True)[0]
    own2 = torch.autograd.grad(loss2, net2.weight, retain_graph=True)[0]
    assert not torch.allclose(own1, both1)  # the JS term connects the two graphs
    backward_each((loss1, loss2), (net1, net2))
    assert torch.allclose(net1.weight.grad, own1) and torch.allclose(net2.weight.grad, own2)


# --- parameters and the 9-layer CNN ---------------------------------------------------------------------

def test_default_params_per_dataset_and_overrides():
    assert CoTeaching.default_params("cifar10").epoch_decay_start == 80
    assert CoTeaching.default_params("cifar100n").epoch_decay_start == 100
    assert CoTeaching.default_params("shapes").forget_rate is None
    assert (Sigua.default_params("cifar10").gamma, Sigua.default_params("cifar10").sigua_rate) == (0.01, 0.3)
    assert CoDis.default_params("cifar100").co_lambda == 0.15
    assert CoDis.resolve_params("cifar10", {"co_lambda": 0.3}).co_lambda == 0.3
    with pytest.raises(dataclasses.FrozenInstanceError):
        CoDis.Params().co_lambda = 1.0


def test_co_teaching_cnn_matches_the_official_architecture():
    model = co_teaching_cnn(100)
    convs = [(3, 128), (128, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512), (512, 256), (256, 128)]
    expected = sum(i * o * 9 + o + 2 * o for i, o in convs) + 128 * 100 + 100  # conv+bias, BN γ/β, linear
    assert sum(p.numel() for p in model.parameters()) == expected
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 100) and torch.equal(out, model(x))  # dropout is off in eval
    assert isinstance(model, CoTeachingCNN)


# --- the training loop ------------------------------------------------------------------------------------

@pytest.fixture
def spy_models(monkeypatch):
    """Record (stream, initial parameters, model) of every network a method creates."""
    created = []
    original = Task.new_model

    def new_model(self, stream="model"):
        model = original(self, stream)
        created.append((stream, {k: v.detach().clone() for k, v in model.named_parameters()}, model))
        return model

    monkeypatch.setattr(Task, "new_model", new_model)
    return created


def changed(before: dict, model) -> bool:
    """Whether any parameter moved (BatchNorm running statistics, which a forward pass alone moves, are
    buffers and not compared)."""
    return any(not torch.equal(before[k], v) for k, v in model.named_parameters())


@pytest.mark.parametrize("method", ["co-teaching", "co-dis"])
def test_both_networks_are_initialised_apart_and_updated(tiny_run, spy_models, method):
    result = tiny_run(method, dataset={"n_train": 600, "n_test": 100}, protocol={"epochs": 1, "milestones": []})
    assert [s for s, _, _ in spy_models] == ["model1", "model2"]
    (_, init1, net1), (_, init2, net2) = spy_models
    assert changed(init1, net2)  # different seed streams: different initial weights
    assert changed(init1, net1) and changed(init2, net2)  # both were trained
    extra = result["curves"][0]["extra"]
    assert {"forget_rate", "val_acc_net2", "test_acc_net2", "train_loss_net2"} <= set(extra)
    assert extra["forget_rate"] == 0.0


def test_sigua_trains_one_network_from_the_ce_stream(tiny_run, spy_models):
    result = tiny_run("sigua", dataset={"n_train": 600, "n_test": 100}, protocol={"epochs": 1, "milestones": []})
    assert [s for s, _, _ in spy_models] == ["model"]
    assert changed(spy_models[0][1], spy_models[0][2])
    assert set(result["curves"][0]["extra"]) == {"forget_rate"}


@pytest.mark.parametrize("method", ["co-teaching", "sigua", "co-dis"])
def test_learns_above_chance_on_the_tiny_setting(tiny_run, method):
    result = tiny_run(method)  # 30% symmetric noise, 10 epochs: chance is 0.10
    assert result["metrics"]["test_acc_oracle"] > 0.15
    assert all(math.isfinite(c["train_loss"]) for c in result["curves"])


def test_two_network_runs_are_deterministic(tiny_run):
    kwargs = dict(dataset={"n_train": 900, "n_test": 100}, protocol={"epochs": 2, "milestones": []})
    first, second = tiny_run("co-dis", **kwargs), tiny_run("co-dis", **kwargs)
    strip = lambda curves: [{k: v for k, v in c.items() if k != "seconds"} for c in curves]  # noqa: E731
    assert first["metrics"] == second["metrics"]
    assert strip(first["curves"]) == strip(second["curves"])


def test_co_teaching_original_protocol_runs_an_epoch_with_the_cnn(tiny_run, spy_models, monkeypatch):
    from echobench.training.networks import NETWORKS
    from echobench.training.protocols import PROTOCOLS

    # Both are registered lazily under the names the protocol uses.
    assert NETWORKS.get("co-teaching-cnn") is co_teaching_cnn
    assert PROTOCOLS.get("co-teaching") is CO_TEACHING_PROTOCOL
    optimizers = []
    original = Task.new_optimizer
    monkeypatch.setattr(Task, "new_optimizer", lambda self, *a, **k: optimizers.append(original(self, *a, **k)) or optimizers[-1])

    protocol = {"name": "co-teaching", "epochs": 1, "milestones": [], "crop_padding": 0}
    # 28 px is the smallest input the CNN's three unpadded convs accept; epoch_decay_start 0 puts the one
    # epoch inside the decay phase, so the β1 switch is visible.
    result = tiny_run("co-teaching", dataset={"n_train": 40, "n_test": 10, "image_size": 28},
                      protocol=protocol, params={"epoch_decay_start": 0})
    assert all(isinstance(m, CoTeachingCNN) for _, _, m in spy_models) and len(spy_models) == 2
    assert all(changed(init, m) for _, init, m in spy_models)
    assert len(optimizers) == 2 and all(isinstance(o, torch.optim.Adam) for o in optimizers)
    assert all(o.param_groups[0]["betas"] == (0.1, 0.999) for o in optimizers)
    assert result["curves"][0]["lr"] == pytest.approx(1e-3)
    assert math.isfinite(result["curves"][0]["train_loss"])
