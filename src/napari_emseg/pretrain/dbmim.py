"""dbMiM: decision-based masking for MAE-3D (Chen et al., IJCAI 2023), as ``mask_strategy="dbmim"``.

Masked image modelling wastes much of its effort on EM: many tokens are plain cytoplasm or
noise that is easy to fill in. dbMiM lets reinforcement learning choose the masks. Every token
is an **agent** and all agents share one **policy** (multi-agent, shared behaviour policy):

state
    each token's patch embedding plus position (the MAE encoder's own, detached), with a
    context term from the mean over the sample's tokens, so agents decide together;
action
    which tokens are masked. The policy gives each token a score; the visible tokens are drawn
    without replacement with probabilities ``softmax(-score)`` (Plackett-Luce, by Gumbel top-k),
    so a high score means "mask me" and every sample keeps the same number of visible tokens;
reward
    the MAE's reconstruction loss on that sample's masked tokens (detached): masks that are hard
    to fill in are rewarded, so the encoder spends its effort on informative structure;
update
    advantage actor-critic: ``-(log pi(mask) * (reward - V(state)))`` plus ``value_coef`` times the
    critic's squared error and minus ``entropy_coef`` times the policy's normalised entropy
    (keeps it exploring). The policy trains with the MAE in one backward pass; its state and
    reward are detached, so its loss never reaches the MAE and the MAE's never reaches it.

What is approximated (the paper's exact state, reward shaping and ratio search are not in the
abstract we implement from): the masking ratio stays fixed (``mask_ratio``; the paper also
searches it), the reward is the raw per-sample loss with a learned baseline, and the entropy is
that of the first draw's distribution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskPolicy", "plackett_luce_log_prob"]


def plackett_luce_log_prob(scores: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``log P(order)`` of drawing ``order`` ``(B, k)`` without replacement from ``softmax(scores)`` ``(B, N)``."""
    s = scores.float()
    taken = torch.zeros_like(s, dtype=torch.bool)
    out = s.new_zeros(s.shape[0])
    for i in range(order.shape[1]):
        idx = order[:, i:i + 1]
        out = out + s.gather(1, idx)[:, 0] - torch.logsumexp(s.masked_fill(taken, float("-inf")), dim=1)
        taken = taken.scatter(1, idx, True)
    return out


class MaskPolicy(nn.Module):
    """Shared per-token actor with a sample-level critic.

    ``forward(tokens, keep)`` draws the visible tokens and returns ``(mask, decision)``: the
    boolean mask ``(B, N)`` (``True`` = masked) and what :meth:`loss` needs.
    """

    def __init__(self, dim: int, hidden: int = 128, entropy_coef: float = 0.01, value_coef: float = 0.5) -> None:
        super().__init__()
        self.entropy_coef, self.value_coef = float(entropy_coef), float(value_coef)
        self.feature = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.context = nn.Linear(hidden, hidden)
        self.actor = nn.Linear(hidden, 1)
        self.critic = nn.Linear(hidden, 1)
        nn.init.zeros_(self.actor.weight)  # starts as random masking: every token equally likely
        nn.init.zeros_(self.actor.bias)

    def scores(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token "mask me" scores ``(B, N)`` and the critic's value ``(B,)``."""
        h = self.feature(tokens.detach().float())
        h = F.gelu(h + self.context(h.mean(1, keepdim=True)))
        return self.actor(h)[..., 0], self.critic(h.mean(1))[:, 0]

    def forward(self, tokens: torch.Tensor, keep: int, greedy: bool = False) -> tuple[torch.Tensor, dict]:
        score, value = self.scores(tokens)
        keep_score = -score
        noisy = keep_score if greedy else keep_score - torch.log(-torch.log(
            torch.rand_like(keep_score).clamp_(1e-9, 1 - 1e-9)))
        order = noisy.topk(keep, dim=1).indices  # a Plackett-Luce draw (Gumbel top-k), in draw order
        mask = torch.ones_like(score, dtype=torch.bool).scatter(1, order, False)
        p = torch.softmax(keep_score, dim=1)
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(1) / math.log(max(2, score.shape[1]))
        return mask, {"log_prob": plackett_luce_log_prob(keep_score, order), "value": value, "entropy": entropy}

    def loss(self, decision: dict, reward: torch.Tensor) -> torch.Tensor:
        """Advantage actor-critic loss for per-sample ``reward`` ``(B,)`` (detached here)."""
        reward = reward.detach().float()
        advantage = (reward - decision["value"]).detach()
        actor = -(decision["log_prob"] * advantage).mean()
        critic = F.mse_loss(decision["value"], reward)
        return actor + self.value_coef * critic - self.entropy_coef * decision["entropy"].mean()
