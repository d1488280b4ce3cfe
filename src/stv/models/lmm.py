"""A loaded multimodal (or text-only) model: prompts in, inputs, answers and scores out.

A prompt is a list of pieces, each a string or a PIL image, in reading order. The same
prompt renders two ways: ``raw`` (images become the family's placeholder, text is kept as
is; what MTV does with base models) or ``chat`` (the processor's chat template with one
user turn and the generation prompt).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, Sequence, Union

import torch
from PIL import Image
from torch import nn

from ..errors import StvError
from ..hooks.headmap import HeadMap
from .compat import source_name
from .processors import left_padding, tokenized
from .scoring import OWN_POSITIONS, CachedDecoding, positions_of

Piece = Union[str, Image.Image]
Prompt = Sequence[Piece]
Render = Literal["raw", "chat"]

# Families whose image placeholder is more than the processor's ``image_token``.
_PLACEHOLDERS = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>",
}


@dataclass
class LMM(CachedDecoding):
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
        if positions and self.family not in OWN_POSITIONS:
            mask = inputs["attention_mask"]
            inputs["position_ids"] = positions_of(mask)
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
