"""GCE, the truncated L_q loss of Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural
Networks with Noisy Labels", NeurIPS 2018 (arXiv:1805.07836). No official code was released: all from the
paper. L_q = (1 - p_y^q) / q (eq. 6), q = 0.7; L_trunc (eq. 9) is the constant L_q(k) where p_y <= k, k = 0.5,
minimised by alternating convex search (Algorithm 1): weights w_i = [p_y(x_i) > k] from the current
network; pruning starts after epoch 40 of 120 and repeats every 10 epochs (§4), scaled to the protocol."""
from dataclasses import dataclass

import torch

from echobench.training.method import SingleNetworkMethod, register_method


def truncated_lq_loss(logits, targets, weights, q: float = 0.7, k: float = 0.5):
    """Mean of w * (L_q(p_y) - L_q(k)): a pruned sample (w = 0) adds the constant, no gradient."""
    p_y = torch.softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    return (weights * ((1 - p_y ** q) / q - (1 - k ** q) / q)).mean()


@dataclass(frozen=True)
class GCEParams:
    q: float = 0.7
    k: float = 0.5
    prune_start: float = 40 / 120  # share of the epochs before the first pruning
    prune_every: float = 10 / 120  # share of the epochs between prunings


@register_method("gce")
class GeneralizedCrossEntropy(SingleNetworkMethod):
    Params = GCEParams

    def begin_epoch(self, epoch, model, task):
        p, done, epochs = self.params, epoch - 1, task.protocol.epochs
        start, every = max(1, round(p.prune_start * epochs)), max(1, round(p.prune_every * epochs))
        if epoch == 1:
            self.weights = torch.ones(int(task.train.indices.max()) + 1, device=task.device)
        elif done >= start and (done - start) % every == 0:  # Algorithm 1's weight step
            p_y = torch.softmax(task.predict(model, task.train), 1).gather(1, task.train.labels[:, None]).squeeze(1)
            self.weights[task.train.indices] = (p_y > p.k).float()

    def loss(self, logits, targets, indices, epoch, task):
        return truncated_lq_loss(logits, targets, self.weights[indices], self.params.q, self.params.k)
