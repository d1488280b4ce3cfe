"""Stage 3, what (choice): REINFORCE over one categorical policy per location."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

# reward_fn(step, choices (S, K) long) -> rewards (S,) float; higher is better
RewardFn = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class ReinforceResult:
    """The trained policy logits and the curves of a REINFORCE run."""

    logits: torch.Tensor  # (K, M)
    reward_curve: list[float] = field(default_factory=list)  # mean reward per step
    max_prob_curve: list[float] = field(default_factory=list)  # mean over locations of max probability

    @property
    def probabilities(self) -> torch.Tensor:
        """Softmax of the logits: (K, M)."""
        return self.logits.softmax(-1)

    @property
    def choice(self) -> torch.Tensor:
        """argmax arm per location: (K,)"""
        return self.logits.argmax(-1)


def reinforce(
    reward_fn: RewardFn,
    locations: int,
    arms: int,
    steps: int = 600,
    samples: int = 32,
    lr: float = 0.1,
    eps: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    init_logits: torch.Tensor | None = None,
) -> ReinforceResult:
    """Independent softmax policies (zero-initialised logits unless ``init_logits``), REINFORCE
    with a normalised baseline.

    Each step samples ``samples`` joint choices, advantage = (r - mean) / (std + eps),
    loss = -mean(advantage * log pi(choice)), Adam.
    """
    gen = torch.Generator().manual_seed(seed)
    start = torch.zeros(locations, arms) if init_logits is None else init_logits.float().expand(locations, arms)
    logits = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    result = ReinforceResult(logits.detach())
    bar = tqdm(range(steps), desc="REINFORCE", disable=not progress)
    for step in bar:
        probs = logits.detach().softmax(-1)
        choices = torch.multinomial(probs, samples, replacement=True, generator=gen).T  # (S, K)
        rewards = reward_fn(step, choices).float()
        advantage = (rewards - rewards.mean()) / (rewards.std(unbiased=False) + eps)
        log_pi = logits.log_softmax(-1).gather(1, choices.T).sum(0)  # (S,)
        loss = -(advantage * log_pi).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        result.reward_curve.append(float(rewards.mean()))
        result.max_prob_curve.append(float(logits.detach().softmax(-1).max(-1).values.mean()))
        if step % 10 == 0:
            bar.set_postfix(reward=f"{result.reward_curve[-1]:.3f}", max_p=f"{result.max_prob_curve[-1]:.2f}")
    result.logits = logits.detach().clone()
    return result
