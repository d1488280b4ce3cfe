"""When a written head output applies while generating (torch-free: the config imports it)."""

from typing import Literal, get_args

# every_step: at the last position of every forward pass (the prompt and each generated token);
# prompt_last: at the prompt's last position only.
Policy = Literal["every_step", "prompt_last"]
POLICIES: tuple[Policy, ...] = get_args(Policy)
