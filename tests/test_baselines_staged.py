"""Staged comparison methods: T-Revision, Joint Optimization, Identifiability (HOC + forward).

Pure functions against hand computations and known transition matrices, then each method end to end
on the tiny shapes setting (stages in order, every stage's epochs in the history, above chance).
"""

import math

import pytest
import torch
import torch.nn.functional as F

import echobench.baselines.identifiability as ident
import echobench.baselines.joint as joint
import echobench.baselines.t_revision as trev
import echobench.training.knn as knn_module
from echobench.training.method import METHODS
from echobench.training.protocols import get_protocol




def softmax_row(row):
    z = [math.exp(v) for v in row]
    return [v / sum(z) for v in z]


# --- T-Revision --------------------------------------------------------------------------------

def test_estimate_transition_recovers_anchor_rows_past_the_top_percentile():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    T = torch.tensor([[0.80, 0.10, 0.05, 0.05], [0.10, 0.70, 0.10, 0.10],
                      [0.05, 0.15, 0.75, 0.05], [0.10, 0.05, 0.05, 0.80]])
    c, n_mix, n_out = 4, 876, 30  # 30 outliers per class = 3% of 1,000 rows
    clean = torch.distributions.Dirichlet(torch.ones(c)).sample((n_mix,))
    mixtures = clean @ T  # noisy posteriors p(ỹ|x) = Tᵀ p(y|x): column i never exceeds T_ii
    anchors = T.clone()  # a sample whose clean posterior is one-hot e_i has noisy posterior T[i]
    outliers = torch.full((c * n_out, c), 0.01 / (c - 1))
    outliers[torch.arange(c * n_out), torch.arange(c).repeat_interleave(n_out)] = 0.99
    probs = torch.cat([mixtures, anchors, outliers])[torch.randperm(n_mix + c + c * n_out, generator=g)]

    est = trev.estimate_transition(probs, percentile=97)
    assert torch.allclose(est, T, atol=1e-6)
    assert torch.allclose(est.sum(1), torch.ones(c))
    # without the percentile the over-confident outliers become the anchors
    plain = trev.estimate_transition(probs, percentile=None)
    assert torch.allclose(plain.diagonal(), torch.full((c,), 0.99))


def test_reweight_loss_matches_hand_computation_and_detaches_beta():
    logits_list, targets_list = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]], [0, 2]
    T_list = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]]
    expected = 0.0
    for row, y in zip(logits_list, targets_list):
        p = softmax_row(row)
        noisy_y = sum(p[k] * T_list[k][y] for k in range(3))  # (Tᵀp)_y
        expected += (p[y] / noisy_y) * -math.log(p[y])
    expected /= 2

    logits = torch.tensor(logits_list, requires_grad=True)
    targets, T = torch.tensor(targets_list), torch.tensor(T_list)
    loss = trev.reweight_loss(logits, targets, T)
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    # β detached: the gradient is that of mean(β_const · CE)
    (grad,) = torch.autograd.grad(loss, logits)
    p = torch.softmax(logits.detach(), 1)
    beta = p[[0, 1], targets] / (p @ T)[[0, 1], targets]
    reference = torch.tensor(logits_list, requires_grad=True)
    (ref_grad,) = torch.autograd.grad((beta * F.cross_entropy(reference, targets, reduction="none")).mean(), reference)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    (live_grad,) = torch.autograd.grad(trev.reweight_loss(logits, targets, T, detach_beta=False), logits)
    assert not torch.allclose(live_grad, ref_grad, atol=1e-4)


def test_revision_uses_t_plus_delta_and_the_flag_reproduces_the_official_accumulation():
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 4), torch.tensor([1, 0, 3])
    T = torch.full((4, 4), 0.1) + 0.6 * torch.eye(4)
    delta = (0.02 * torch.randn(4, 4)).requires_grad_()

    intended = trev.reweight_loss(logits, targets, T, correction=delta, detach_beta=False)
    assert intended.item() == pytest.approx(trev.reweight_loss(logits, targets, T + delta.detach()).item(), rel=1e-6)
    (g,) = torch.autograd.grad(intended, delta)
    assert g.abs().sum() > 0  # ΔT learns through β

    # the official loop: `T = T + correction` inside the per-sample loop
    p, running, official = torch.softmax(logits, 1), T.clone(), 0.0
    for i in range(3):
        running = running + delta.detach()
        y = targets[i]
        official += (p[i, y] / (running.t() @ p[i])[y]) * -torch.log(p[i, y])
    official = official / 3
    buggy = trev.reweight_loss(logits, targets, T, correction=delta, detach_beta=False, official_correction_bug=True)
    assert buggy.item() == pytest.approx(official.item(), rel=1e-6)
    assert abs(buggy.item() - intended.item()) > 1e-4
    # for a one-sample batch the two agree (sample 0 uses T + 1·ΔT)
    one = dict(correction=delta, detach_beta=False)
    assert trev.reweight_loss(logits[:1], targets[:1], T, official_correction_bug=True, **one).item() == pytest.approx(
        trev.reweight_loss(logits[:1], targets[:1], T, **one).item(), rel=1e-6)


def test_t_revision_defaults_and_epoch_scaling():
    assert trev.TRevision.default_params("cifar10") == trev.TRevision.default_params("shapes")
    c10, c100 = trev.TRevision.default_params("cifar10"), trev.TRevision.default_params("cifar100")
    assert (c10.warmup_epochs, c10.anchor_percentile, c10.revision_lr) == (20, 97.0, 5e-7)
    assert (c100.warmup_epochs, c100.anchor_percentile) == (15, None)
    assert trev.stage_epochs(c10, _protocol(200)) == {"warmup": 20, "reweight": 200, "revision": 200}
    assert trev.stage_epochs(c10, _protocol(300)) == {"warmup": 20, "reweight": 200, "revision": 200}
    assert trev.stage_epochs(c10, _protocol(10)) == {"warmup": 1, "reweight": 10, "revision": 10}
    # rule 2: the warm-up reads its network, so it waits for CE to level off; the other stages scale
    assert trev.stage_epochs(c10, _protocol(40, levels_off=12)) == {"warmup": 12, "reweight": 40, "revision": 40}
    assert trev.stage_epochs(c10, _protocol(400, levels_off=12))["warmup"] == 20  # the official length when longer
    assert trev.stage_epochs(trev.Params(scale_epochs=False, warmup_epochs=3), _protocol(10, levels_off=5))["warmup"] == 3


def _protocol(epochs: int, levels_off: int = 0):
    return get_protocol("smoke", {"epochs": epochs, "ce_levels_off": levels_off})


# --- Joint Optimization ------------------------------------------------------------------------

def test_joint_loss_matches_hand_computation():
    logits_list = [[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    soft_list = [[0.7, 0.2, 0.1], [0.0, 0.0, 1.0]]
    alpha, beta = 1.2, 0.8
    ps = [softmax_row(r) for r in logits_list]
    l_c = -sum(s * math.log(q) for p, ss in zip(ps, soft_list) for s, q in zip(ss, p)) / 2
    mean_p = [(ps[0][k] + ps[1][k]) / 2 for k in range(3)]
    l_p = sum((1 / 3) * math.log((1 / 3) / m) for m in mean_p)
    l_e = -sum(q * math.log(q) for p in ps for q in p) / 2
    prior = torch.full((3,), 1 / 3)
    got = joint.joint_loss(torch.tensor(logits_list), torch.tensor(soft_list), prior, alpha=alpha, beta=beta)
    assert got.item() == pytest.approx(l_c + alpha * l_p + beta * l_e, rel=1e-6)
    # the official code's prior term −Σ p log s̄ is the KL plus the prior's entropy (log C)
    official = l_c + alpha * -sum((1 / 3) * math.log(m) for m in mean_p) + beta * l_e
    assert official - got.item() == pytest.approx(alpha * math.log(3), rel=1e-5)


def test_label_update_is_the_mean_of_the_last_window_predictions():
    noisy = torch.tensor([0, 1, 2, 1])
    updater = joint.LabelUpdater(noisy, 3, window=3, begin=4)
    preds = [torch.softmax(torch.randn(4, 3, generator=torch.Generator().manual_seed(e)), 1) for e in range(6)]
    for epoch in (1, 2, 3):
        assert not updater.push(epoch, preds[epoch])
        assert torch.equal(updater.soft, F.one_hot(noisy, 3).float()) and torch.equal(updater.hard, noisy)
    assert updater.push(4, preds[4])
    assert torch.allclose(updater.soft, (preds[2] + preds[3] + preds[4]) / 3)
    assert updater.push(5, preds[5])
    assert torch.allclose(updater.soft, (preds[3] + preds[4] + preds[5]) / 3)
    assert torch.equal(updater.hard, updater.soft.argmax(1))


def test_joint_defaults_and_epoch_scaling():
    d = joint.JointOptimization.default_params("cifar10")
    assert (d.alpha, d.beta, d.step1_lr, d.step2_lr, d.begin_epoch, d.window) == (1.2, 0.8, 0.08, 0.2, 70, 10)
    assert joint.stage_epochs(d, _protocol(200)) == {"relabel": 200, "retrain": 120, "begin_epoch": 70, "window": 10}
    assert joint.stage_epochs(d, _protocol(10)) == {"relabel": 10, "retrain": 6, "begin_epoch": 4, "window": 1}
    assert joint.stage_epochs(d, _protocol(40, levels_off=12)) == {"relabel": 40, "retrain": 24, "begin_epoch": 14,
                                                                   "window": 2}
    assert joint.stage_epochs(d, _protocol(40, levels_off=20))["begin_epoch"] == 20


# --- Identifiability (HOC) ---------------------------------------------------------------------

def clustered_noisy(T: torch.Tensor, per_class: int, seed: int = 0, dim: int = 32):
    """Well-separated Gaussian clusters, one per clean class; in each class exactly round(T_ij·n)
    labels are flipped to j, so the realised transition matrix is T itself."""
    g = torch.Generator().manual_seed(seed)
    c = T.shape[0]
    centers = torch.randn(c, dim, generator=g) * 3
    clean = torch.arange(c).repeat_interleave(per_class)
    x = centers[clean] + 0.5 * torch.randn(len(clean), dim, generator=g)
    noisy = clean.clone()
    for i in range(c):
        members = (clean == i).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=g)]
        counts = torch.round(T[i] * per_class).long()
        counts[i] += per_class - counts.sum()
        noisy[members] = torch.arange(c).repeat_interleave(counts)
    return x, noisy


def symmetric(c, r):
    T = torch.full((c, c), r / (c - 1))
    return T.fill_diagonal_(1 - r)


def pairflip(c, r):
    return (1 - r) * torch.eye(c) + r * torch.roll(torch.eye(c), 1, dims=1)


@pytest.mark.parametrize("kind, sampling", [("symmetric", {}), ("pairflip", {"rounds": 3, "sample_size": 6000})])
def test_hoc_estimate_recovers_a_known_transition_matrix(kind, sampling):
    T = symmetric(5, 0.3) if kind == "symmetric" else pairflip(5, 0.3)
    x, noisy = clustered_noisy(T, per_class=2000)
    est = ident.hoc_estimate(x, noisy, 5, generator=torch.Generator().manual_seed(0), **sampling)
    assert (est - T).abs().max().item() < 0.05
    assert torch.allclose(est.sum(1), torch.ones(5), atol=1e-5)


def test_nearest_neighbours_are_chunked_and_exact(monkeypatch):
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    f = F.normalize(x, dim=1)
    sim = f @ f.t()
    sim.fill_diagonal_(-float("inf"))
    expected = sim.topk(2, dim=1).indices
    monkeypatch.setattr(knn_module, "CHUNK_ELEMENTS", 120)  # 3 rows per chunk
    assert torch.equal(ident.nearest_two(x), expected)


def test_forward_loss_is_ce_for_identity_and_matches_hand_computation():
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(2)) * 3
    targets = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(3))
    assert ident.forward_loss(logits, targets, torch.eye(5)).item() == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    T = pairflip(5, 0.4)
    q = torch.softmax(logits, 1) @ T
    assert ident.forward_loss(logits, targets, T).item() == pytest.approx(-torch.log(q[torch.arange(8), targets]).mean().item(), rel=1e-5)


def test_identifiability_defaults():
    d = ident.Identifiability.default_params("cifar100")
    assert (d.rounds, d.sample_size, d.hoc_steps, d.hoc_lr, d.feature_space) == (50, 15000, 1500, 0.1, "warmup")
    assert ident.stage_epochs(d, _protocol(10)) == {"warmup": 8, "forward": 5}
    assert ident.stage_epochs(d, _protocol(10, levels_off=9)) == {"warmup": 9, "forward": 5}


# --- end to end on the tiny shapes setting -----------------------------------------------------

END_TO_END = {
    # The tiny setting learns slowly (CE ≈ 0.24 after 8 epochs): T-Revision needs a warm-up long
    # enough for a usable T̂ (after one epoch T̂ is near-uniform and the reweighting collapses).
    "t-revision": ({"scale_epochs": False, "warmup_epochs": 8, "reweight_epochs": 3, "revision_epochs": 2,
                    "min_revision_reach": 0.0},  # run the revision stage even though it cannot move T̂ here
                   {"warmup": 8, "reweight": 3, "revision": 2}),
    "joint": ({"scale_epochs": False, "step1_epochs": 7, "begin_epoch": 5, "window": 2, "step2_epochs": 4},
              {"relabel": 7, "retrain": 4}),
    "identifiability": ({"scale_epochs": False, "warmup_epochs": 7, "forward_epochs": 4, "hoc_steps": 300},
                        {"warmup": 7, "estimate": 0, "forward": 4}),
}


@pytest.mark.parametrize("name", list(END_TO_END))
def test_method_end_to_end(tiny_run, name):
    params, stages = END_TO_END[name]
    assert name in METHODS.names()
    result = tiny_run(name, params=params)
    assert result["metrics"]["test_acc_oracle"] > 0.15
    curves = result["curves"]
    assert [c["epoch"] for c in curves] == list(range(1, sum(stages.values()) + 1))
    # stages in order: each stage's epochs are consecutive, numbered 1.. within the stage
    expected = [(k, e) for k, n in enumerate(v for v in stages.values() if v) for e in range(1, n + 1)]
    assert [(int(c["extra"]["stage"]), int(c["extra"]["stage_epoch"])) for c in curves] == expected
    assert set(stages) <= {k[:-2] for k in result["timings"] if k.endswith("_s")}
    assert all(result["timings"][f"{s}_s"] > 0 for s in stages)
    assert all(math.isfinite(c["train_loss"]) for c in curves)
    # the final stage's own model learns too (chance is 0.10), not only the warm-up
    final_stage = max(c["extra"]["stage"] for c in curves)
    assert max(c["test_acc"] for c in curves if c["extra"]["stage"] == final_stage) > 0.12


def test_params_reject_unknown_choices():
    from echobench.errors import EchobenchError

    with pytest.raises(EchobenchError, match="lr_source"):
        trev.Params(lr_source="paper")
    with pytest.raises(EchobenchError, match="lr_source"):
        joint.Params(lr_source="")
    with pytest.raises(EchobenchError, match="feature_space"):
        ident.Params(feature_space="clip")


@pytest.mark.parametrize("name, params", [
    ("t-revision", {"scale_epochs": False, "warmup_epochs": 1, "reweight_epochs": 1, "revision_epochs": 1,
                    "lr_source": "official", "official_correction_bug": True, "min_revision_reach": 0.0}),
    ("joint", {"scale_epochs": False, "step1_epochs": 2, "begin_epoch": 1, "window": 3, "step2_epochs": 1,
               "lr_source": "official", "step2_hard": True}),
    ("identifiability", {"scale_epochs": False, "warmup_epochs": 1, "forward_epochs": 1, "hoc_steps": 20,
                         "feature_space": "pixels", "head_only": True, "lr_source": "official"}),
])
def test_optional_paths_run(tiny_run, name, params):
    """The non-default switches (official rates, the official ΔT accumulation, hard retraining labels,
    pixel features with a linear head) run through; accuracy is not the point of these runs."""
    result = tiny_run(name, params=params)
    assert all(math.isfinite(c["train_loss"]) for c in result["curves"])
    assert result["metrics"]["epochs"] == sum(v for k, v in params.items() if k.endswith("_epochs"))


def test_ce_levels_off_must_be_an_epoch_of_the_protocol():
    from echobench.errors import EchobenchError

    with pytest.raises(EchobenchError, match="ce_levels_off must be an epoch in 0..epochs, got 3"):
        get_protocol("smoke", {"ce_levels_off": 3})  # smoke has 2 epochs
    assert "ce_levels_off" not in get_protocol("paper").to_dict()  # left out at 0: paper run ids unchanged
    assert get_protocol("shapes").to_dict()["ce_levels_off"] == 23


def test_a_run_applies_the_stage_length_rule(tiny_run):
    """Default T-Revision under a 4-epoch protocol whose CE levels off at epoch 3: a 3-epoch warm-up
    (rule 2, not the scaled 1 epoch), a 4-epoch reweight stage (rule 1), and no revision epochs: Adam
    at the official 5e-7 cannot move ΔT by 0.01 in 4 × 85 steps, so the stage is skipped and the cell
    says why (rule 3). The end-to-end test above runs the stage (min_revision_reach 0)."""
    result = tiny_run("t-revision", protocol={"epochs": 4, "milestones": [3], "ce_levels_off": 3})
    stages = [int(c["extra"]["stage"]) for c in result["curves"]]
    assert stages == [0, 0, 0, 1, 1, 1, 1]
    why = result["diagnostics"]["skipped_stages"]["revision"]
    assert "lr 5e-07 for 340 steps" in why and "cannot revise" in why
