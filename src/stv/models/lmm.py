"""A loaded multimodal (or text-only) model: prompts in, inputs, answers and scores out.

A prompt is a list of pieces, each a string or a PIL image, in reading order. The same
prompt renders two ways: ``raw`` (images become the family's placeholder, text is kept as
is; what MTV does with base models) or ``chat`` (the processor's chat template with one
user turn and the generation prompt).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Sequence, Union

import torch
from PIL import Image
from torch import nn

from ..errors import StvError
from ..hooks.headmap import HeadMap
from ..hooks.heads import decoding, write_heads
from .compat import attention_implementation, cache_keyword, cache_of, croppable, source_name
from .processors import left_padding, tokenized

Piece = Union[str, Image.Image]
Prompt = Sequence[Piece]
Render = Literal["raw", "chat"]

# Families whose image placeholder is more than the processor's ``image_token``.
_PLACEHOLDERS = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>",
}
# Inputs with one entry per token (sliced when the last token is held back).
_PER_TOKEN = {"input_ids", "attention_mask", "position_ids", "token_type_ids", "mm_token_type_ids"}
# Families that compute their own (multimodal rotary) position ids from the attention mask.
_OWN_POSITIONS = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}


@dataclass
class LMM:
    """Model + processor + head map, with the few operations every stage needs."""

    model: nn.Module
    processor: Any
    heads: HeadMap
    name: str = ""
    revision: str | None = None
    family: str = ""

    @classmethod
    def from_model(
        cls, model: nn.Module, processor: Any, name: str | None = None, heads_pattern: str | None = None
    ) -> "LMM":
        """Wrap a model the user already loaded (with its tokenizer or processor).

        The model is put in eval mode; its heads are found as :func:`stv.load_model` finds
        them (``heads_pattern`` overrides discovery)."""
        config = getattr(model, "config", None)
        if config is None:
            raise TypeError(f"{type(model).__name__} has no .config; pass a transformers model")
        model.eval()
        return cls(
            model=model,
            processor=processor,
            heads=HeadMap.from_model(model, pattern=heads_pattern),
            name=name or source_name(config) or type(model).__name__,
            family=config.model_type,
        )

    @classmethod
    def wrapping(cls, target: Any) -> "LMM":
        """``target`` itself when it is an LMM, else a plain transformers model wrapped without
        changing it (no eval(), no tokenizer): enough to find, record and write its heads."""
        if isinstance(target, LMM):
            return target
        config = getattr(target, "config", None)
        if not isinstance(target, nn.Module) or config is None:
            raise StvError(f"{type(target).__name__} is neither an stv LMM nor a transformers model; pass one of them")
        name = source_name(config) or type(target).__name__
        return cls(model=target, processor=None, heads=HeadMap.from_model(target), name=name, family=config.model_type)

    def weights_fingerprint(self) -> str:
        """Which weights these are: the GGUF's sha256, or a hash of every parameter's name,
        shape and first/last values (cheap even for 7B models, and different for any other
        checkpoint of the same architecture)."""
        if self.revision and self.revision.startswith("gguf-sha256:"):
            return self.revision
        return self.params_fingerprint()

    def params_fingerprint(self) -> str:
        """A hash of the loaded parameters alone (the same model loaded from its GGUF through
        stv or from the converted folder by transformers hashes the same)."""
        if getattr(self, "_weights", None) is None:
            digest = hashlib.sha256()
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    flat = p.detach().flatten()
                    digest.update(f"{name}{tuple(p.shape)}".encode())
                    digest.update(torch.cat([flat[:64], flat[-64:]]).float().cpu().numpy().tobytes())
            self._weights = f"params-sha256:{digest.hexdigest()[:16]}"
        return self._weights

    # ------------------------------------------------------------------ basics
    @property
    def tokenizer(self):
        """The processor's tokenizer (the processor itself for text models)."""
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def device(self) -> torch.device:
        """Where the model's first parameters live."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The model's parameter dtype."""
        return next(self.model.parameters()).dtype

    @property
    def is_multimodal(self) -> bool:
        """The processor takes images."""
        return hasattr(self.processor, "image_processor")

    @property
    def image_placeholder(self) -> str:
        """The text that stands for one image in a prompt."""
        if self.family in _PLACEHOLDERS:
            return _PLACEHOLDERS[self.family]
        token = getattr(self.processor, "image_token", None)
        if token is None:
            raise StvError(f"{self.name}: the processor defines no image token; this model cannot take images")
        return token

    # --------------------------------------------------------------- rendering
    def render(self, prompt: Prompt, mode: Render = "raw") -> tuple[str, list[Image.Image]]:
        """Prompt pieces -> (text with image placeholders, images in order)."""
        images = [p for p in prompt if isinstance(p, Image.Image)]
        bad = [type(p).__name__ for p in prompt if not isinstance(p, (str, Image.Image))]
        if bad:
            raise TypeError(f"prompt pieces must be str or PIL.Image, got {bad[0]}")
        if images and not self.is_multimodal:
            raise StvError(f"{self.name} is a text-only model; the prompt has {len(images)} image(s)")
        if mode == "raw":
            return "".join(p if isinstance(p, str) else self.image_placeholder for p in prompt), images
        if mode != "chat":
            raise StvError(f"render mode {mode!r} is not 'raw' or 'chat'")
        if (
            getattr(self.processor, "chat_template", None) is None
            and getattr(self.tokenizer, "chat_template", None) is None
        ):
            raise StvError(f"{self.name} has no chat template; use render mode 'raw'")
        content = [{"type": "text", "text": p} if isinstance(p, str) else {"type": "image"} for p in prompt]
        messages = [{"role": "user", "content": content if self.is_multimodal else "".join(prompt)}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, images

    @property
    def pad_token_id(self) -> int:
        """What padding uses: the tokenizer's pad token, else EOS (as :meth:`prepare` pads)."""
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def prepare(self, prompts: Sequence[Prompt], mode: Render = "raw", positions: bool = True) -> dict:
        """Render, tokenize and left-pad a batch; returns tensors on the model's device.

        ``positions`` adds ``position_ids`` built from the attention mask as ``generate``
        does, so a left-padded row sees the same positions as the prompt alone.
        """
        rendered = [self.render(p, mode) for p in prompts]
        texts = [t for t, _ in rendered]
        with left_padding(self.tokenizer):
            inputs = dict(tokenized(self.processor, texts, [images for _, images in rendered]))
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if limit and inputs["input_ids"].shape[1] > limit:
            raise StvError(
                f"a prompt of {inputs['input_ids'].shape[1]} tokens exceeds {self.name}'s maximum of "
                f"{limit} positions; use fewer demonstrations (--shots / --context-shots)"
            )
        if self.family != "gemma3":  # Gemma3 needs token_type_ids (bidirectional image attention)
            inputs.pop("token_type_ids", None)
        if positions and self.family not in _OWN_POSITIONS:
            mask = inputs["attention_mask"]
            inputs["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
        dtype = self.dtype
        return {
            k: (v.to(self.device, dtype=dtype) if torch.is_floating_point(v) else v.to(self.device))
            for k, v in inputs.items()
            if isinstance(v, torch.Tensor)
        }

    # -------------------------------------------------------------- inference
    @torch.inference_mode()
    def forward(self, prompts: Sequence[Prompt], mode: Render = "raw") -> torch.Tensor:
        """Logits of the next token after each prompt: (batch, vocab)."""
        out = self.model(**self.prepare(prompts, mode), use_cache=False, logits_to_keep=1)  # last position only
        return out.logits[:, -1].float()

    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[Prompt], max_new_tokens: int = 20, mode: Render = "raw", **kwargs
    ) -> list[str]:
        """Greedy decoding; returns the new text of each prompt (special tokens dropped)."""
        return self.decode(self.generate_ids(prompts, max_new_tokens, mode, **kwargs))

    @torch.inference_mode()
    def generate_ids(
        self, prompts: Sequence[Prompt], max_new_tokens: int = 20, mode: Render = "raw", **kwargs
    ) -> torch.Tensor:
        """Greedy decoding; the new token ids (batch, new), padded after an end of sequence.

        Column 0 is the argmax after each prompt, so one call gives both the first-token
        accuracy and the generated answer."""
        inputs = self.prepare(prompts, mode, positions=False)
        kwargs.setdefault("do_sample", False)
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=self.pad_token_id, **kwargs)
        return out[:, inputs["input_ids"].shape[1] :].cpu()

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Generated ids -> text, special tokens removed."""
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def answer_ids(self, answers: Sequence[str]) -> list[list[int]]:
        """Token ids of each answer as it continues a prompt; an empty tokenization is an error."""
        ids = self.tokenizer(list(answers), add_special_tokens=False)["input_ids"]
        empty = [a for a, i in zip(answers, ids) if not i]
        if empty:
            raise StvError(f"answer {empty[0]!r} tokenizes to nothing")
        return ids

    def answer_targets(
        self, answers: Sequence[str], max_tokens: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each answer's tokens (at most ``max_tokens``), right-padded for :meth:`teacher_forced`:
        ``target`` (B, T) and ``valid`` (B, T), true where a row has a token."""
        ids = [row[:max_tokens] for row in self.answer_ids(answers)]
        pad = self.pad_token_id
        target = torch.full((len(ids), max(map(len, ids))), pad, dtype=torch.long, device=self.device)  # (B, T)
        valid = torch.zeros_like(target, dtype=torch.bool)  # (B, T)
        for r, row in enumerate(ids):
            target[r, : len(row)] = torch.tensor(row)
            valid[r, : len(row)] = True
        return target, valid

    @torch.inference_mode()
    def score(
        self, prompts: Sequence[Prompt], answers: Sequence[str], mode: Render = "raw", first_token_only: bool = False
    ) -> torch.Tensor:
        """Teacher-forced log-probability of each answer after its prompt: (batch,) float32.

        The prompt runs once with a KV cache, then answer tokens one at a time, exactly as
        ``generate`` would see them, so head replacement at "the last position" means the
        same thing here as under ``generate``.
        """
        if len(prompts) != len(answers):
            raise StvError(f"{len(prompts)} prompts but {len(answers)} answers")
        target, valid = self.answer_targets(answers, 1 if first_token_only else None)
        inputs = self.prepare(prompts, mode)
        total = torch.zeros(len(answers), device=self.device)
        for step, logits in enumerate(self.teacher_forced(inputs, target, valid)):
            logp = torch.log_softmax(logits.float(), -1).gather(1, target[:, step : step + 1]).squeeze(1)
            total += logp * valid[:, step]
        return total.cpu()

    def teacher_forced(self, inputs: dict, target: torch.Tensor, valid: torch.Tensor) -> Iterator[torch.Tensor]:
        """Yield next-token logits after the prompt, then after each fed answer token: one
        decode (``heads.decoding``), so active writers write where ``generate`` would."""
        mask = inputs["attention_mask"]
        with decoding(self.model):
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
            yield out.logits[:, -1]
            cache, pos = cache_of(out), (mask.long().cumsum(-1) - 1)[:, -1]
            for step in range(target.shape[1] - 1):
                mask = torch.cat([mask, valid[:, step : step + 1].long().to(mask.dtype)], 1)
                pos = pos + 1
                out = self.model(**self._continue_inputs(target[:, step : step + 1], mask, cache, pos[:, None]))
                cache = cache_of(out)
                yield out.logits[:, -1]

    def _rope_deltas(self) -> torch.Tensor | None:
        """The multimodal-RoPE offset the last prompt pass stored in the model (Qwen-VL families)."""
        if self.family not in _OWN_POSITIONS:
            return None
        return getattr(getattr(self.model, "model", self.model), "rope_deltas", None)

    def _continue_inputs(
        self, ids: torch.Tensor, mask: torch.Tensor, cache, positions: torch.Tensor, deltas: torch.Tensor | None = None
    ) -> dict:
        """Inputs for more tokens after a cached prefix; ``positions`` (rows, new) are text positions."""
        inputs = {"input_ids": ids, "attention_mask": mask, cache_keyword(self.model): cache, "use_cache": True}
        if self.family in _OWN_POSITIONS:
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
    @torch.inference_mode()
    def prefix(self, prompts: Sequence[Prompt], mode: Render = "raw", then: torch.Tensor | None = None) -> "Prefix":
        """Run every prompt but its last token once, keeping the KV cache.

        Interventions only touch the last position, so all candidates share this prefix:
        :meth:`last_token_logits` then scores many candidates as one batch. With ``then``
        (one token id per prompt, e.g. a teacher-forced first answer token) the whole prompt
        is the prefix and ``then`` is the last token: candidates are then scored at the first
        generated position, and whatever hooks are active write the prompt's last token.
        """
        inputs = self.prepare(prompts, mode)
        mask = inputs["attention_mask"]
        if then is None:
            last = inputs["input_ids"][:, -1:]
            if self.is_multimodal and bool((last == getattr(self.model.config, "image_token_id", -1)).any()):
                raise StvError("prefix caching needs prompts that end in text, not in an image")
            head = {k: (v[..., :-1] if k in _PER_TOKEN else v) for k, v in inputs.items()}
        else:
            last, head = then.reshape(-1, 1).to(mask.device), inputs
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)  # left padding: the new token goes right
        out = self.model(**head, use_cache=True, logits_to_keep=1)  # only the cache is needed
        deltas = self._rope_deltas()
        return Prefix(
            cache_of(out), last, mask, (mask.long().cumsum(-1) - 1)[:, -1], None if deltas is None else deltas.clone()
        )

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
