"""Hooks that read or overwrite attention heads' outputs (found by ``headmap.HeadMap``).

A head's output is its slice of the *input* of the layer's attention output projection
(``o_proj``): ``(batch, seq, heads * head_dim)`` viewed as ``(batch, seq, heads, head_dim)``.
Editing that input (not the projection's output) keeps any projection bias intact and works
for every attention backend, because the projection is a plain ``nn.Linear``.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import StvError
from .headmap import HeadMap, Location
from .policy import POLICIES, Policy


@dataclass(eq=False)  # identity: each writer's own counter, found and removed as itself
class _Step:
    """Which forward pass of a decode (``generate``, or :func:`decoding`) we are in."""

    in_generate: int = 0
    forward_index: int = 0


# model -> the counters of the writers active on it (what decoding() advances)
_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, list[_Step]]" = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def decoding(model: nn.Module) -> Iterator[None]:
    """The forward passes inside are one decode, as ``generate`` runs it: pass 0 the prompt,
    pass t the t-th token fed after it with a KV cache (teacher forcing). Writers active on
    ``model`` then write what they would write under ``generate`` (``prompt_last``: the prompt
    pass and the continuation rows only) instead of editing every pass's last position."""
    steps = list(_ACTIVE.get(model, []))
    for step in steps:
        step.in_generate += 1
        step.forward_index = -1
    try:
        yield
    finally:
        for step in steps:
            step.in_generate -= 1


def _by_layer(locations: Sequence[Location]) -> dict[int, list[tuple[int, int]]]:
    """layer -> [(index into locations, head)]"""
    groups: dict[int, list[tuple[int, int]]] = {}
    for i, (layer, head) in enumerate(locations):
        groups.setdefault(layer, []).append((i, head))
    return groups


@dataclass
class Recording:
    """Last-position head outputs captured by :func:`record`: ``values`` is the first pass's
    (batch, n_locations, head_dim); ``passes`` holds every recorded pass's, in order."""

    locations: list[Location]
    values: torch.Tensor | None = None
    passes: list[torch.Tensor] = field(default_factory=list)
    _parts: dict[int, list[torch.Tensor]] = field(default_factory=dict)


@contextlib.contextmanager
def record_heads(
    heads: HeadMap,
    locations: Sequence[Location] | None = None,
    positions: torch.Tensor | Sequence[int] | None = None,
    passes: int = 1,
) -> Iterator[Recording]:
    """Capture head outputs of the first ``passes`` forward passes run inside the block (one:
    the prompt; more: the tokens fed after it with a KV cache, e.g. teacher forcing).

    ``positions`` picks one sequence index per batch row of the first pass (default: the
    last, -1, which is the last prompt token under left padding); later passes give their
    last position. Values come back detached, on CPU, float32.
    """
    locs = heads.check(locations) if locations is not None else heads.all_locations()
    rec = Recording(locs)
    groups = _by_layer(locs)

    def make_hook(layer: int):
        def hook(module: nn.Module, args: tuple) -> None:
            seen = rec._parts.setdefault(layer, [])
            if len(seen) >= passes:
                return
            x = args[0]
            batch = x.shape[0]
            if positions is None or seen:
                last = x[:, -1]
            else:
                pos = torch.as_tensor(positions, device=x.device).long()
                last = x[torch.arange(batch, device=x.device), pos]
            last = last.view(batch, heads.num_heads, heads.head_dim)
            idx = torch.tensor([h for _, h in groups[layer]], device=x.device)
            seen.append(last.index_select(1, idx).detach().float().cpu())

        return hook

    handles = [heads.projections[layer].register_forward_pre_hook(make_hook(layer)) for layer in groups]
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()
    if rec._parts:
        missing = [layer for layer in groups if not rec._parts.get(layer)]
        if missing:
            raise RuntimeError(f"layers {missing} were not reached by the forward pass")
        for t in range(min(len(parts) for parts in rec._parts.values())):
            batch = rec._parts[next(iter(groups))][t].shape[0]
            out = torch.empty(batch, len(locs), heads.head_dim)
            for layer, items in groups.items():
                for j, (i, _) in enumerate(items):
                    out[:, i] = rec._parts[layer][t][:, j]
            rec.passes.append(out)
        rec.values = rec.passes[0]
        rec._parts.clear()


def _check_continuation(continuation, policy: str, n: int, head_dim: int) -> torch.Tensor | None:
    if continuation is None:
        return None
    later = torch.as_tensor(continuation)
    if policy != "prompt_last":
        raise StvError(
            f"continuation vectors are written at generated tokens 1..T by policy 'prompt_last'; "
            f"policy {policy!r} already writes every token"
        )
    if later.dim() != 3 or later.shape[1:] != (n, head_dim):
        raise StvError(f"continuation must have shape (T, {n}, {head_dim}); got {tuple(later.shape)}")
    return later


def _check_shifts(shifts, values) -> torch.Tensor | None:
    if shifts is None:
        return None
    shifts = torch.as_tensor(shifts)
    if shifts.shape != torch.as_tensor(values).shape:
        raise StvError(f"shifts {tuple(shifts.shape)} must have the shape of values {tuple(values.shape)}")
    if torch.isnan(shifts).any():
        raise StvError("shifts must not be NaN (0 adds nothing)")
    return shifts


def _check_values(values, n: int, head_dim: int) -> torch.Tensor:
    values = torch.as_tensor(values)
    if values.dim() not in (2, 3) or values.shape[-2:] != (n, head_dim):
        raise StvError(
            f"values must have shape ({n}, {head_dim}) or (batch, {n}, {head_dim}); got {tuple(values.shape)}"
        )
    return values


@dataclass
class _Writer:
    """The write hooks of :func:`write_heads`: which values go where, at which forward pass."""

    heads: HeadMap
    locations: list[Location]
    values: torch.Tensor  # (n, D) or (rows * span, n, D)
    later: torch.Tensor | None  # (T, n, D) for generated tokens 1..T
    policy: str
    span: int
    shifts: torch.Tensor | None = None  # like values: added after the write (0: nothing added)
    step: _Step = field(default_factory=_Step)
    _cache: dict[tuple[torch.device, torch.dtype, int], torch.Tensor] = field(default_factory=dict)

    @functools.cached_property
    def has_nan(self) -> bool:
        """Whether any value is NaN: checked once, not once per layer (MTV's values for every
        head of 32 samples are millions of numbers, and a check per layer was a third of a
        GPU search step)."""
        return bool(torch.isnan(self.values).any())

    def pass_index(self) -> int | None:
        """Which row of values this forward pass writes (0: ``values``; t: ``later[t - 1]``),
        or None when it writes nothing."""
        t = self.step.forward_index if self.step.in_generate and self.policy == "prompt_last" else 0
        return t if t <= (0 if self.later is None else len(self.later)) else None

    def values_on(self, x: torch.Tensor, t: int, shifts: bool = False) -> torch.Tensor:
        """Row ``t`` of the values (see :meth:`pass_index`), or with ``shifts`` the shifts of
        pass 0, on ``x``'s device and dtype, moved once."""
        key = (x.device, x.dtype, -1 if shifts else t)
        if key not in self._cache:
            chosen = self.shifts if shifts else self.values if t == 0 or self.later is None else self.later[t - 1]
            assert chosen is not None
            self._cache[key] = chosen.to(device=x.device, dtype=x.dtype)
        return self._cache[key]

    def _rows(self, v: torch.Tensor, batch: int) -> torch.Tensor:
        """Per-row values (rows * span, n, D) as (batch, span, n, D); shared ones (n, D) as they are."""
        if v.dim() != 3:
            return v
        if v.shape[0] != batch * self.span:
            raise StvError(
                f"per-row values have {v.shape[0]} rows but the input has {batch} rows x {self.span} positions"
            )
        return v.view(batch, self.span, len(self.locations), self.heads.head_dim)

    def hook(self, layer_heads: list[tuple[int, int]]):
        """The forward pre-hook of one layer's output projection: every head of the layer is
        written by one gather and one indexed write (not a loop over heads: MTV writes all
        of them, and per-head ops were most of a GPU search step's launches)."""
        keep_nan = self.has_nan  # NaN rows mean "leave this head as it is"
        h = self.heads
        columns = torch.tensor([i for i, _ in layer_heads])  # (m,) into the locations
        targets = torch.tensor([head for _, head in layer_heads])  # (m,) heads of this layer
        on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

        def write(module: nn.Module, args: tuple):
            t = self.pass_index()
            if t is None:
                return None
            x = args[0]
            batch, span = x.shape[0], self.span
            if x.device not in on_device:
                on_device[x.device] = (columns.to(x.device), targets.to(x.device))
            cols, idx = on_device[x.device]
            new = self._rows(self.values_on(x, t), batch)[..., cols, :]  # (m, D) or (batch, span, m, D)
            x = x.clone()  # never write into a tensor we don't own
            tail = x[:, -span:].view(batch, span, h.num_heads, h.head_dim)  # a view into x
            if keep_nan or t:
                new = torch.where(torch.isnan(new), tail[:, :, idx], new)  # (batch, span, m, D)
            if self.shifts is not None and t == 0:  # shifts go with the values, not the continuation
                new = new + self._rows(self.values_on(x, 0, shifts=True), batch)[..., cols, :]
            tail[:, :, idx] = new.expand(batch, span, len(layer_heads), h.head_dim)
            return (x,) + tuple(args[1:])

        return write

    def count_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Count model forwards, so prompt_last writes at the prompt only."""
        if self.step.in_generate:
            self.step.forward_index += 1


@contextlib.contextmanager
def _guarded_generate(model: nn.Module, step: _Step, writes_generated: str | None) -> Iterator[None]:
    """``model.generate`` that counts forward passes from 0 (the prompt) and, when generated
    tokens are written (``writes_generated`` names what writes them), refuses the settings
    under which those edits would be lost."""
    original = model.__dict__.get("generate")
    bound = model.generate

    def generate(*args, **kwargs):
        gen_config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
        use_cache = kwargs.get("use_cache", getattr(gen_config, "use_cache", True))
        if writes_generated and use_cache is False:
            raise StvError(
                f"{writes_generated} needs the KV cache: with use_cache=False every step re-runs the "
                "whole sequence and earlier generated tokens would lose their edits. Use use_cache=True "
                "or policy='prompt_last' without continuation vectors"
            )
        if writes_generated and kwargs.get("prefill_chunk_size"):
            raise StvError(
                f"{writes_generated} cannot be combined with chunked prefill (prefill_chunk_size): "
                "chunks would be edited at their own last token. Turn chunked prefill off"
            )
        step.in_generate += 1
        step.forward_index = -1
        try:
            return bound(*args, **kwargs)
        finally:
            step.in_generate -= 1

    model.generate = generate  # instance attribute, removed on exit
    try:
        yield
    finally:
        if original is None:
            del model.generate
        else:
            model.generate = original


@contextlib.contextmanager
def write_heads(
    model: nn.Module,
    heads: HeadMap,
    locations: Sequence[Location],
    values: torch.Tensor,
    policy: Policy = "every_step",
    span: int = 1,
    continuation: torch.Tensor | None = None,
    shifts: torch.Tensor | None = None,
) -> Iterator[None]:
    """Overwrite head outputs at the last position with ``values``, then add ``shifts``.

    ``values`` is ``(n_locations, head_dim)`` shared by all rows, or ``(batch, n_locations,
    head_dim)`` per row; a NaN vector leaves that head unchanged for that row. Under
    ``generate``, ``"every_step"`` edits the prompt's last token and every generated token
    (MTV's behaviour); ``"prompt_last"`` edits only the prompt pass; the same holds inside
    :func:`decoding`. Elsewhere every forward pass is edited (each one ends at a prompt's
    last token). ``span`` > 1 edits the last ``span`` positions of each row, each with its
    own values (rows ordered ``row * span + position``): how many candidates are scored side
    by side after one prefix. ``continuation`` ``(T, n_locations, head_dim)``, with
    ``"prompt_last"`` only: under ``generate``, generated token t (1..T) gets row t - 1 (NaN =
    leave alone).
    ``shifts``, shaped like ``values`` (0 = nothing), are added to the heads' outputs after
    ``values`` are written wherever ``values`` are (a NaN value plus a shift: the head's own
    output moved by the shift, a steering vector rather than a replacement).
    Hooks are removed on exit, also after an exception.
    """
    if policy not in POLICIES:
        raise StvError(f"policy {policy!r} is not one of {POLICIES}")
    locs = heads.check(locations)
    writer = _Writer(
        heads,
        locs,
        _check_values(values, len(locs), heads.head_dim),
        _check_continuation(continuation, policy, len(locs), heads.head_dim),
        policy,
        span,
        _check_shifts(shifts, values),
    )
    handles = [
        heads.projections[layer].register_forward_pre_hook(writer.hook(items))
        for layer, items in _by_layer(locs).items()
    ]
    counter_module = heads.decoder if heads.decoder is not None else heads.projections[0]
    handles.append(counter_module.register_forward_pre_hook(writer.count_forward, with_kwargs=True, prepend=True))
    _ACTIVE.setdefault(model, []).append(writer.step)
    try:
        writes_generated = (
            "policy 'every_step'" if policy == "every_step" else "continuation" if writer.later is not None else None
        )
        with _guarded_generate(model, writer.step, writes_generated):
            yield
    finally:
        _ACTIVE[model].remove(writer.step)
        for h in handles:
            h.remove()


_RENAMED = {"record": "record_heads", "replace": "write_heads"}  # old names, kept for one release


def __getattr__(name: str):
    if name in _RENAMED:
        warnings.warn(
            f"stv.hooks.heads.{name} is deprecated; use {_RENAMED[name]} (the old name goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
