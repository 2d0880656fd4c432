"""The robust-loss baselines APL (NCE+RCE), PCE, AUL and CELC (LogitClip): each loss against values
computed by hand with plain `math`, edge cases, finite gradients, per-dataset defaults, registration,
and one tiny end-to-end run per method."""

from __future__ import annotations

import math

import pytest
import torch

import echobench.baselines.apl as apl
import echobench.baselines.aul as aul
import echobench.baselines.celc as celc
import echobench.baselines.pce as pce
from echobench.errors import EchobenchError
from echobench.training.method import METHODS

LOG_1E4 = -math.log(1e-4)  # the RCE's factor: -log clamp(0, 1e-4, 1)


# --- plain-Python references --------------------------------------------------------------------
def softmax(z: list[float]) -> list[float]:
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def log_softmax(z: list[float]) -> list[float]:
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return [v - lse for v in z]


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def T(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def Y(labels) -> torch.Tensor:
    return torch.tensor(labels, dtype=torch.int64)


Z = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [-2.0, 0.0, 0.3]]
LABELS = [0, 2, 1]


def close(value: torch.Tensor, expected: float, rel: float = 1e-5, abs_: float = 1e-6) -> bool:
    return float(value) == pytest.approx(expected, rel=rel, abs=abs_)


# --- APL: NCE, RCE, NCE+RCE -----------------------------------------------------------------------
def test_nce_matches_hand_computation():
    expected = mean(log_softmax(z)[y] / sum(log_softmax(z)) for z, y in zip(Z, LABELS))
    assert close(apl.nce_loss(T(Z), Y(LABELS)), expected)


def test_rce_matches_hand_computation_and_one_minus_p_y():
    expected = mean(LOG_1E4 * sum(max(p, 1e-7) for k, p in enumerate(softmax(z)) if k != y) for z, y in zip(Z, LABELS))
    value = apl.rce_loss(T(Z), Y(LABELS))
    assert close(value, expected)
    assert close(value, mean(LOG_1E4 * (1 - softmax(z)[y]) for z, y in zip(Z, LABELS)))


def test_rce_floor_on_tiny_probabilities():
    # p_1 ~ 4.5e-5 counts as is, p_2 ~ 9e-14 is floored at 1e-7: RCE = -log(1e-4) (p_1 + 1e-7),
    # not -log(1e-4)(1 - p_y) exactly (the floor adds 2e-3 relative here).
    z, y = [10.0, 0.0, -20.0], 0
    p = softmax(z)
    value = apl.rce_loss(T([z]), Y([y]))
    assert close(value, LOG_1E4 * (p[1] + 1e-7), rel=2e-4, abs_=0.0)
    assert abs(float(value) - LOG_1E4 * (1 - p[0])) <= LOG_1E4 * 2 * 1e-7 + 1e-9


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (10.0, 0.1)])
def test_nce_rce_is_weighted_sum(alpha, beta):
    x, y = T(Z), Y(LABELS)
    combined = apl.nce_rce_loss(x, y, alpha=alpha, beta=beta)
    assert torch.allclose(combined, alpha * apl.nce_loss(x, y) + beta * apl.rce_loss(x, y))
    nce = mean(log_softmax(z)[t] / sum(log_softmax(z)) for z, t in zip(Z, LABELS))
    rce = mean(LOG_1E4 * (1 - softmax(z)[t]) for z, t in zip(Z, LABELS))
    assert close(combined, alpha * nce + beta * rce, rel=1e-4)


# --- PCE ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau, classes", [(2.0, 2), (10.0, 10)])
def test_pce_at_threshold_both_branches_agree(tau, classes):
    # All-equal logits give p_y = 1/classes = 1/tau: linear piece -tau/tau + log tau + 1 = log tau = -log p_y.
    value = pce.pce_loss(torch.zeros(1, classes), Y([0]), tau=tau)
    assert close(value, math.log(tau))
    assert close(value, -tau * (1 / tau) + math.log(tau) + 1)


def test_pce_each_side_of_threshold():
    tau = 2.0
    below, above = [0.0, 3.0], [3.0, 0.0]  # target 0: p_y = 0.047 < 1/2 and 0.953 > 1/2
    p_below, p_above = softmax(below)[0], softmax(above)[0]
    assert close(pce.pce_loss(T([below]), Y([0]), tau=tau), -tau * p_below + math.log(tau) + 1)
    assert close(pce.pce_loss(T([above]), Y([0]), tau=tau), -math.log(p_above))
    # The other branch gives clearly different numbers there, so a swapped condition fails:
    assert abs(-math.log(p_below) - (-tau * p_below + math.log(tau) + 1)) > 1.0
    both = pce.pce_loss(T([below, above]), Y([0, 0]), tau=tau)
    assert close(both, mean([-tau * p_below + math.log(tau) + 1, -math.log(p_above)]))


def test_pce_is_continuous_across_threshold():
    tau = 10.0
    # Ten classes, target logit d away from nine zeros: p_y crosses 1/10 at d = 0.
    values = [float(pce.pce_loss(T([[d] + [0.0] * 9]), Y([0]), tau=tau)) for d in (-1e-3, 0.0, 1e-3)]
    assert values[0] == pytest.approx(math.log(tau), abs=2e-3)
    assert values[2] == pytest.approx(math.log(tau), abs=2e-3)
    assert values[0] > values[1] > values[2]


def test_pce_rejects_tau_at_most_one():
    with pytest.raises(ValueError):
        pce.pce_loss(T(Z), Y(LABELS), tau=1.0)
    with pytest.raises(EchobenchError):
        pce.PCEParams(tau=0.5)


# --- AUL, AGCE, AEL, NCE+AUL ----------------------------------------------------------------------
def test_aul_matches_hand_computation():
    a, q = 5.5, 3.0
    expected = mean(((a - softmax(z)[y]) ** q - (a - 1) ** q) / q for z, y in zip(Z, LABELS))
    assert close(aul.aul_loss(T(Z), Y(LABELS), a=a, q=q), expected)
    a, q = 6.3, 1.5
    expected = mean(((a - softmax(z)[y]) ** q - (a - 1) ** q) / q for z, y in zip(Z, LABELS))
    assert close(aul.aul_loss(T(Z), Y(LABELS), a=a, q=q), expected)


def test_aul_is_zero_at_p_y_one():
    logits = T([[100.0, 0.0, 0.0, 0.0], [0.0, -100.0, 100.0, 0.0]])  # p_y == 1.0 in float32
    assert float(aul.aul_loss(logits, Y([0, 2]), a=5.5, q=3.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(aul.aul_loss(logits, Y([0, 2]), a=6.0, q=3.0)) == pytest.approx(0.0, abs=1e-6)


def test_aul_does_not_clamp_p():
    # p_y ~ 2e-9 (below any 1e-7 floor): an unclamped p still passes a (tiny) gradient to the logits.
    logits = T([[-20.0, 0.0, 0.0]]).requires_grad_()
    aul.aul_loss(logits, Y([0]), a=5.5, q=3.0).backward()
    assert float(logits.grad[0, 0]) < 0


def test_agce_and_ael_match_hand_computation():
    a, q = 0.6, 0.6
    expected = mean(((a + 1) ** q - (a + softmax(z)[y]) ** q) / q for z, y in zip(Z, LABELS))
    assert close(aul.agce_loss(T(Z), Y(LABELS), a=a, q=q), expected)
    a = 2.5
    expected = mean(math.exp(-softmax(z)[y] / a) for z, y in zip(Z, LABELS))
    assert close(aul.ael_loss(T(Z), Y(LABELS), a=a), expected)


def test_nce_aul_is_weighted_sum():
    x, y = T(Z), Y(LABELS)
    alpha, beta, a, q = 10.0, 0.015, 6.0, 3.0
    combined = aul.nce_aul_loss(x, y, alpha=alpha, beta=beta, a=a, q=q)
    nce = mean(log_softmax(z)[t] / sum(log_softmax(z)) for z, t in zip(Z, LABELS))
    aul_ = mean(((a - softmax(z)[t]) ** q - (a - 1) ** q) / q for z, t in zip(Z, LABELS))
    assert close(combined, alpha * nce + beta * aul_)


# --- CELC (LogitClip) -----------------------------------------------------------------------------
def test_logit_clip_below_at_and_above_bound():
    temperature = 0.2  # bound 1/0.2 = 5; rows are 3-4-5 triangles with norms 2.5, 5, 10
    rows = T([[1.5, 2.0], [3.0, 4.0], [6.0, 8.0]])
    clipped = celc.clip_logits(rows, temperature=temperature)
    assert torch.equal(clipped[0], rows[0])  # below: unchanged
    assert torch.equal(clipped[1], rows[1])  # at: unchanged
    assert torch.allclose(clipped[2], T([3.0, 4.0]))  # above: rescaled to norm 5, same direction
    expected = mean(-log_softmax(z)[y] for z, y in zip([[1.5, 2.0], [3.0, 4.0], [3.0, 4.0]], [0, 1, 0]))
    assert close(celc.logit_clip_loss(rows, Y([0, 1, 0]), temperature=temperature), expected)


def test_logit_clip_official_threshold_differs_unless_temperature_one():
    # temp < 1: the official code compares the norm with temp (0.2) but rescales to 1/temp (5),
    # so a norm-2.5 row is scaled *up* to norm 5.
    row = T([[1.5, 2.0]])
    official = celc.clip_logits(row, temperature=0.2, official_threshold=True)
    assert torch.allclose(official, T([[3.0, 4.0]]), atol=1e-5)
    assert torch.equal(celc.clip_logits(row, temperature=0.2), row)
    # temp > 1: bound 1/2; a norm-1 row is above the bound but below the official threshold 2.
    row = T([[0.6, 0.8]])
    assert torch.equal(celc.clip_logits(row, temperature=2.0, official_threshold=True), row)
    assert torch.allclose(celc.clip_logits(row, temperature=2.0), T([[0.3, 0.4]]))
    a = celc.logit_clip_loss(row, Y([0]), temperature=2.0)
    b = celc.logit_clip_loss(row, Y([0]), temperature=2.0, official_threshold=True)
    assert close(a, -log_softmax([0.3, 0.4])[0]) and close(b, -log_softmax([0.6, 0.8])[0])
    # temp == 1: threshold and radius coincide, both agree (up to the official 1e-7).
    rows = T([[0.3, 0.4], [3.0, 4.0]])
    assert torch.allclose(celc.clip_logits(rows, temperature=1.0), celc.clip_logits(rows, temperature=1.0, official_threshold=True), atol=1e-6)
    assert torch.allclose(celc.clip_logits(rows, temperature=1.0)[1], T([0.6, 0.8]))


# --- gradients ------------------------------------------------------------------------------------
LOSSES = {
    "nce_rce": lambda x, y: apl.nce_rce_loss(x, y, alpha=10.0, beta=0.1),
    "nce": apl.nce_loss,
    "rce": apl.rce_loss,
    "pce_2": lambda x, y: pce.pce_loss(x, y, tau=2.0),
    "pce_10": lambda x, y: pce.pce_loss(x, y, tau=10.0),
    "aul": lambda x, y: aul.aul_loss(x, y, a=5.5, q=3.0),
    "nce_aul": lambda x, y: aul.nce_aul_loss(x, y, alpha=1.0, beta=4.0, a=6.3, q=1.5),
    "agce": lambda x, y: aul.agce_loss(x, y, a=0.6, q=0.6),
    "ael": lambda x, y: aul.ael_loss(x, y, a=2.5),
    "celc": lambda x, y: celc.logit_clip_loss(x, y, temperature=1.5),
    "celc_official": lambda x, y: celc.logit_clip_loss(x, y, temperature=1.5, official_threshold=True),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_finite_loss_and_gradient_for_extreme_logits(name):
    rows = [[50.0, -50.0, 0.0, 0.0], [-50.0, 50.0, 50.0, -50.0], [0.0, 0.0, 0.0, 0.0], [-50.0, -50.0, -50.0, 50.0]]
    logits = T(rows).requires_grad_()
    value = LOSSES[name](logits, Y([0, 0, 1, 3]))
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()


# --- defaults, params and registration ------------------------------------------------------------
def test_default_params_follow_official_configs_per_dataset():
    P = apl.ActivePassiveLoss.default_params
    assert (P("cifar10").alpha, P("cifar10").beta, P("cifar10").grad_clip) == (1.0, 1.0, 5.0)
    assert (P("cifar100").alpha, P("cifar100").beta, P("cifar100").grad_clip) == (10.0, 0.1, 5.0)
    P = pce.PartiallyHuberisedCE.default_params
    assert (P("cifar10").tau, P("cifar100").tau, P("cifar10").grad_clip) == (2.0, 10.0, None)
    P = aul.AsymmetricUnhingedLoss.default_params
    c10, c100 = P("cifar10"), P("cifar100")
    assert (c10.variant, c10.a, c10.q, c10.grad_clip) == ("aul", 5.5, 3.0, 5.0)
    assert (c100.variant, c100.a, c100.q) == ("aul", 5.5, 3.0)  # plain AUL: same values in both configs
    assert (c10.alpha, c10.beta, c10.nce_aul_a, c10.nce_aul_q) == (1.0, 4.0, 6.3, 1.5)
    assert (c100.alpha, c100.beta, c100.nce_aul_a, c100.nce_aul_q) == (10.0, 0.015, 6.0, 3.0)
    P = celc.LogitClipCE.default_params
    assert (P("cifar10").temperature, P("cifar100").temperature) == (1.5, 1.0)
    assert (P("cifar10").official_threshold, P("cifar10").grad_clip) == (False, None)
    for cls in (apl.ActivePassiveLoss, pce.PartiallyHuberisedCE, aul.AsymmetricUnhingedLoss, celc.LogitClipCE):
        assert cls.default_params("cifar10") != cls.default_params("cifar100")
        assert cls.default_params("shapes") == cls.default_params("cifar10n") == cls.default_params("cifar10")
        assert cls.default_params("cifar100n") == cls.default_params("cifar100")


def test_aul_variant_switch_and_validation():
    cls = aul.AsymmetricUnhingedLoss
    params = cls.resolve_params("cifar100", {"variant": "nce_aul"})
    x, y = T(Z), Y(LABELS)
    got = cls(params).loss(x, y, None, 1, None)
    assert torch.equal(got, aul.nce_aul_loss(x, y, alpha=10.0, beta=0.015, a=6.0, q=3.0))
    assert torch.equal(cls(cls.default_params("cifar10")).loss(x, y, None, 1, None), aul.aul_loss(x, y, a=5.5, q=3.0))
    with pytest.raises(EchobenchError):
        cls.resolve_params("cifar10", {"variant": "agce"})
    with pytest.raises(EchobenchError):
        cls.resolve_params("cifar10", {"a": 0.5})


def test_methods_use_their_loss_with_their_params():
    x, y = T(Z), Y(LABELS)
    m = apl.ActivePassiveLoss(apl.ActivePassiveLoss.default_params("cifar100"))
    assert torch.equal(m.loss(x, y, None, 1, None), apl.nce_rce_loss(x, y, alpha=10.0, beta=0.1))
    m = pce.PartiallyHuberisedCE(pce.PartiallyHuberisedCE.default_params("cifar100"))
    assert torch.equal(m.loss(x, y, None, 1, None), pce.pce_loss(x, y, tau=10.0))
    m = celc.LogitClipCE(celc.LogitClipCE.resolve_params("cifar10", {"official_threshold": True}))
    assert torch.equal(m.loss(x, y, None, 1, None), celc.logit_clip_loss(x, y, temperature=1.5, official_threshold=True))


@pytest.mark.parametrize("name, cls", [("apl", apl.ActivePassiveLoss), ("pce", pce.PartiallyHuberisedCE),
                                       ("aul", aul.AsymmetricUnhingedLoss), ("celc", celc.LogitClipCE)])
def test_methods_are_registered(name, cls):
    assert METHODS.get(name) is cls
    assert cls.name == name


# --- end to end on the tiny shapes setting --------------------------------------------------------
# The fixture's SGD defaults (lr 0.02, pad-2 crops and flips, 10 epochs) suit CE; the bounded losses
# fit much more slowly there and stay near chance (measured at seed 1, 30% symmetric noise, oracle test
# accuracy: apl 0.122, aul 0.126, pce 0.160, celc 0.200; at SGD lr 0.1 apl and aul collapse to one
# class). Adam does not care about the losses' gradient scale, so the end-to-end check trains with
# Adam lr 3e-3, no augmentation, 15 epochs (measured: all four 0.20-0.27 at seeds 1 and 2).
E2E_PROTOCOL = {"optimizer": "adam", "lr": 0.003, "crop_padding": 0, "flip": False, "epochs": 15, "milestones": [12]}


@pytest.mark.parametrize("name", ["apl", "pce", "aul", "celc"])
def test_method_learns_on_tiny_shapes(tiny_run, name):
    result = tiny_run(name, protocol=E2E_PROTOCOL)
    assert result["metrics"]["epochs"] == 15
    assert result["metrics"]["test_acc_oracle"] > 0.15  # chance is 0.10


def test_run_is_deterministic(tiny_run):
    # Two short runs of APL (which also exercises gradient clipping) on a smaller world must agree exactly.
    kwargs = {"protocol": {"epochs": 2, "milestones": []}, "dataset": {"n_train": 1000, "n_test": 200}}
    first, second = tiny_run("apl", **kwargs), tiny_run("apl", **kwargs)
    assert first["metrics"] == second["metrics"]
    assert [r["train_loss"] for r in first["curves"]] == [r["train_loss"] for r in second["curves"]]
