"""Decoding after a cached prefix: teacher forcing as ``generate`` decodes, one-pass answer
logits for training, and the prefix-cached scoring of many candidate writes at once (the
searches' rewards). A mixin of :class:`~stv.models.lmm.LMM`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from torch import nn

from ..errors import StvError
from ..hooks.headmap import HeadMap
from ..hooks.heads import decoding, write_heads
from .compat import attention_implementation, cache_keyword, cache_of, croppable

if TYPE_CHECKING:
    from .lmm import Prompt, Render

# Inputs with one entry per token (sliced when the last token is held back).
PER_TOKEN = {"input_ids", "attention_mask", "position_ids", "token_type_ids", "mm_token_type_ids"}
# Families that compute their own (multimodal rotary) position ids from the attention mask.
OWN_POSITIONS = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Position ids from a (left-padded) attention mask, as ``generate`` builds them: (B, T),
    padding at position 1 (it is masked anyway)."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)


class CachedDecoding:
    """What :class:`LMM` does after a prompt's tokens: decode its answer or score candidates."""

    model: nn.Module
    heads: HeadMap
    family: str

    if TYPE_CHECKING:

        def prepare(self, prompts: Sequence[Prompt], mode: Render = "raw", positions: bool = True) -> dict: ...

        @property
        def dtype(self) -> torch.dtype: ...

        @property
        def is_multimodal(self) -> bool: ...

    def teacher_forced(
        self, inputs: "dict | Prefix", target: torch.Tensor, valid: torch.Tensor, rest_at_once: bool = False
    ) -> Iterator[torch.Tensor]:
        """Yield next-token logits after the prompt, then after each fed answer token: one
        decode (``heads.decoding``), so active writers write where ``generate`` would.
        ``inputs`` may be a :class:`Prefix` (``prefix(..., grad=True)``, run before any writer
        is active): the decode then starts at the prompt's last token, and the tokens before
        it are neither recomputed nor tracked by autograd (writers touch no earlier position).
        ``rest_at_once``: the answer tokens after the first are fed in one pass, for writers
        that write nothing at generated tokens (``prompt_last`` without continuation)."""
        with decoding(self.model):
            if isinstance(inputs, Prefix):
                mask, pos = inputs.mask, inputs.last_pos
                deltas = inputs.deltas
                out = self.model(**self._continue_inputs(inputs.last_ids, mask, inputs.cache, pos[:, None], deltas))
            else:
                mask, deltas = inputs["attention_mask"], None
                out = self.model(**inputs, use_cache=True, logits_to_keep=1)
                pos = positions_of(mask)[:, -1]
            yield out.logits[:, -1]
            cache = cache_of(out)
            if rest_at_once and target.shape[1] > 1:
                fed = target[:, :-1]  # (B, T-1)
                mask = torch.cat([mask, valid[:, :-1].long().to(mask.dtype)], 1)
                positions = pos[:, None] + torch.arange(1, fed.shape[1] + 1, device=pos.device)  # (B, T-1)
                out = self.model(**self._continue_inputs(fed, mask, cache, positions, deltas))
                yield from out.logits.unbind(1)
                return
            for step in range(target.shape[1] - 1):
                mask = torch.cat([mask, valid[:, step : step + 1].long().to(mask.dtype)], 1)
                pos = pos + 1
                fed = self._continue_inputs(target[:, step : step + 1], mask, cache, pos[:, None], deltas)
                out = self.model(**fed)
                cache = cache_of(out)
                yield out.logits[:, -1]

    def answer_logits(self, inputs: dict, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The logits :meth:`teacher_forced` yields, (B, T, V), from one pass over each prompt
        and its answer: for training the whole model (LoRA), where no writer is active.
        Multimodal-RoPE families decode step by step instead."""
        if self.family in OWN_POSITIONS:
            return torch.stack(list(self.teacher_forced(inputs, target, valid)), 1)
        fed, tail = target[:, :-1], valid[:, :-1]  # (B, T-1): answer tokens that predict the next
        whole = dict(inputs)
        whole["input_ids"] = torch.cat([inputs["input_ids"], fed], 1)
        whole["attention_mask"] = mask = torch.cat(
            [inputs["attention_mask"], tail.to(inputs["attention_mask"].dtype)], 1
        )
        for key in ("token_type_ids", "mm_token_type_ids"):  # answer tokens are text
            if key in inputs:
                whole[key] = torch.cat([inputs[key], torch.zeros_like(fed, dtype=inputs[key].dtype)], 1)
        whole["position_ids"] = positions_of(mask)
        return self.model(**whole, use_cache=False, logits_to_keep=target.shape[1]).logits

    def _rope_deltas(self) -> torch.Tensor | None:
        """The multimodal-RoPE offset the last prompt pass stored in the model (Qwen-VL families)."""
        if self.family not in OWN_POSITIONS:
            return None
        return getattr(getattr(self.model, "model", self.model), "rope_deltas", None)

    def _continue_inputs(
        self, ids: torch.Tensor, mask: torch.Tensor, cache, positions: torch.Tensor, deltas: torch.Tensor | None = None
    ) -> dict:
        """Inputs for more tokens after a cached prefix; ``positions`` (rows, new) are text positions."""
        inputs = {"input_ids": ids, "attention_mask": mask, cache_keyword(self.model): cache, "use_cache": True}
        if self.family in OWN_POSITIONS:
            # multimodal RoPE: text position + the offset the prefix pass stored
            deltas = deltas if deltas is not None else self._rope_deltas()
            if deltas is None:
                deltas = torch.zeros_like(positions[:, :1])
            if deltas.shape[0] != positions.shape[0]:
                deltas = deltas.repeat_interleave(positions.shape[0] // deltas.shape[0], 0)
            inputs["position_ids"] = (positions + deltas.to(positions.device))[None].expand(3, -1, -1)
        else:
            inputs["position_ids"] = positions
        return inputs

    # ------------------------------------------------------ prefix-cached scoring
    def prefix(
        self, prompts: Sequence[Prompt], mode: Render = "raw", then: torch.Tensor | None = None, grad: bool = False
    ) -> "Prefix":
        """Run every prompt but its last token once, keeping the KV cache.

        Interventions only touch the last position, so all candidates share this prefix:
        :meth:`last_token_logits` then scores many candidates as one batch. With ``then``
        (one token id per prompt, e.g. a teacher-forced first answer token) the whole prompt
        is the prefix and ``then`` is the last token: candidates are then scored at the first
        generated position, and whatever hooks are active write the prompt's last token.
        ``grad``: a cache that later passes may take gradients through (no_grad, not
        inference mode), for :meth:`teacher_forced` under a learned correction.
        """
        return self.prefix_of(self.prepare(prompts, mode), then, grad)

    def prefix_of(self, inputs: dict, then: torch.Tensor | None = None, grad: bool = False) -> "Prefix":
        """:meth:`prefix` of prompts already prepared (:meth:`prepare`'s ``inputs``)."""
        with torch.no_grad() if grad else torch.inference_mode():
            return self._prefix(inputs, then)

    def _prefix(self, inputs: dict, then: torch.Tensor | None) -> "Prefix":
        mask = inputs["attention_mask"]
        if then is None:
            last = inputs["input_ids"][:, -1:]
            if self.is_multimodal and bool((last == getattr(self.model.config, "image_token_id", -1)).any()):
                raise StvError("prefix caching needs prompts that end in text, not in an image")
            head = {k: (v[..., :-1] if k in PER_TOKEN else v) for k, v in inputs.items()}
        else:
            last, head = then.reshape(-1, 1).to(mask.device), inputs
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)  # left padding: the new token goes right
        out = self.model(**head, use_cache=True, logits_to_keep=1)  # only the cache is needed
        deltas = self._rope_deltas()
        return Prefix(cache_of(out), last, mask, positions_of(mask)[:, -1], None if deltas is None else deltas.clone())

    @torch.inference_mode()
    def last_token_logits(self, prefix: "Prefix", repeats: int = 1, keep: bool = False) -> torch.Tensor:
        """Next-token logits after each prompt's last token, each prompt repeated ``repeats``
        times (rows ``q * repeats + s``), under whatever hooks are active (use
        :meth:`candidates` to write per-row values).

        The repeats are fanned out along the sequence, not the batch: each row gets
        ``repeats`` copies of its last token, all at the same position, each seeing the prefix
        and itself only (a 4D mask), so the KV cache is never copied ``repeats`` times. The
        prefix stays usable afterwards when ``keep``."""
        fan_out = self._mask_kind() is not None
        cache = prefix.cache
        if keep and not (fan_out and croppable(cache)):
            cache = copy.deepcopy(cache)
        if not fan_out:  # attention backends without custom masks: repeat along the batch
            if repeats > 1:
                cache.batch_repeat_interleave(repeats)
            rep = lambda t: t.repeat_interleave(repeats, 0)  # noqa: E731
            deltas = None if prefix.deltas is None else rep(prefix.deltas)
            inputs = self._continue_inputs(
                rep(prefix.last_ids), rep(prefix.mask), cache, rep(prefix.last_pos)[:, None], deltas
            )
            return self.model(**inputs).logits[:, -1].float()
        rows, span = prefix.last_ids.shape[0], repeats
        ids = prefix.last_ids.expand(rows, span)
        pos = prefix.last_pos[:, None].expand(rows, span)
        inputs = self._continue_inputs(ids, self._fan_out_mask(prefix.mask[:, :-1], span), cache, pos, prefix.deltas)
        logits = self.model(**inputs).logits.float().reshape(rows * span, -1)
        if cache is prefix.cache and keep:
            cache.crop(-span)
        return logits

    def candidates(self, locations, values: torch.Tensor, repeats: int, shifts: torch.Tensor | None = None):
        """The ``replace`` context that matches :meth:`last_token_logits`: ``values`` (and
        ``shifts``) have one row per (prompt, repeat), ordered ``q * repeats + s``."""
        span = repeats if self._mask_kind() is not None else 1
        return write_heads(self.model, self.heads, locations, values, span=span, shifts=shifts)

    def _mask_kind(self) -> torch.dtype | None:
        """The dtype of a custom 4D attention mask this model's attention takes, or None."""
        return {"sdpa": torch.bool, "eager": self.dtype}.get(attention_implementation(self.model))

    def _fan_out_mask(self, prefix_mask: torch.Tensor, span: int) -> torch.Tensor:
        """(rows, 1, span, prefix + span): every new position sees the prefix and itself."""
        rows, length = prefix_mask.shape
        allowed = torch.zeros(rows, 1, span, length + span, dtype=torch.bool, device=prefix_mask.device)
        allowed[..., :length] = prefix_mask.bool()[:, None, None, :]
        allowed[..., length:] = torch.eye(span, dtype=torch.bool, device=prefix_mask.device)
        if self._mask_kind() is torch.bool:
            return allowed
        return torch.zeros(allowed.shape, dtype=self.dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(self.dtype).min
        )


@dataclass
class Prefix:
    """KV cache of prompts without their last token, and what is needed to feed it."""

    cache: Any
    last_ids: torch.Tensor
    mask: torch.Tensor
    last_pos: torch.Tensor
    deltas: torch.Tensor | None = None  # multimodal-RoPE offsets of these prompts

    def rows(self, start: int, end: int) -> "Prefix":
        """Prompts ``start:end`` alone, on a copy of their part of the cache (the padding
        columns of the longer prompts stay, masked)."""
        cache = copy.deepcopy(self.cache)
        cache.batch_select_indices(torch.arange(start, end, device=self.mask.device))
        deltas = None if self.deltas is None else self.deltas[start:end]
        return Prefix(cache, self.last_ids[start:end], self.mask[start:end], self.last_pos[start:end], deltas)
