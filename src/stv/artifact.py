"""What every fitted artifact (task vectors, a LoRA adapter) can do besides its own ``apply``:
stay attached until removed, load from a hub repo id, push to the hub with a model card."""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def local_folder(name_or_path: str | Path, files: Sequence[str], revision: str | None = None) -> Path:
    """``name_or_path`` as a folder here: itself when it exists (or cannot be a repo id), else
    the hub repo's ``files`` downloaded (or found in the cache when offline)."""
    path = Path(name_or_path)
    if path.exists() or not _REPO_ID.fullmatch(str(name_or_path)):
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), allow_patterns=list(files), revision=revision))
    except Exception as err:  # offline and not cached, unknown repo, no access: the hub's own error types
        raise FileNotFoundError(
            f"{name_or_path}: no such folder here, and no hub repo of that id could be read "
            f"({type(err).__name__}); give a local folder, or a repo id with network access "
            "(or one already in the Hugging Face cache)"
        ) from None


def model_card(config: Any, kind: str, loader: str, files: Sequence[str]) -> str:
    """A README.md for a pushed artifact: what it is, what it was fitted on, how to load it
    (``stv.<loader>.from_pretrained``). ``config``: its TaskVectorsConfig."""
    base = config.model if _REPO_ID.fullmatch(config.model or "") else None
    front = ["---", "library_name: stv", "tags:", "- stv", "- task-vectors", f"- {config.method}"]
    front += [f"base_model: {base}"] if base else []
    front.append("---")
    settings = json.dumps(config.hyperparameters, indent=1, sort_keys=True)
    body = f"""
# {config.method} {kind} for {config.model or "a model"}

Fitted with stv ({config.method}; stv {config.stv_version or "unknown"}) on
{config.num_layers} layers x {config.num_heads} heads of `{config.model}` (weights `{config.weights}`),
{config.train_examples} training examples (data fingerprint `{config.data_fingerprint or "not recorded"}`). Files: {", ".join(f"`{f}`" for f in files)}.

```python
import stv

artifact = stv.{loader}.from_pretrained("REPO_ID")
with artifact.apply(model):  # an stv LMM or the transformers model it was fitted on
    output = model.generate(**inputs)
```

It refuses a model whose head layout or weights differ from the ones above
(`allow_other_weights=True` accepts another checkpoint of the same layout).

## Settings

```json
{settings}
```
"""
    return "\n".join(front) + "\n" + body


class Artifact:
    """Mixed into an artifact that defines ``apply`` (a context manager), ``save_pretrained``
    and a TaskVectorsConfig ``config``."""

    HUB_KIND = "task vectors"

    def attach(self, model: Any, policy: Any = None, allow_other_weights: bool = False) -> contextlib.ExitStack:
        """Write into ``model`` until :meth:`remove` (or ``.close()`` of what this returns):
        ``apply`` without a ``with`` block."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.apply(model, policy, allow_other_weights))  # type: ignore[attr-defined]
        self.__dict__.setdefault("_attached", []).append(stack)
        return stack

    def remove(self) -> None:
        """Undo every :meth:`attach` of this artifact, newest first (nothing attached: no-op)."""
        attached = self.__dict__.get("_attached", [])
        while attached:
            attached.pop().close()

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload with stv",
        api: Any = None,
    ) -> str:
        """Upload the artifact and a model card (README.md) to hub repo ``repo_id`` (created if
        missing); returns the commit URL. ``api``: a ``huggingface_hub.HfApi`` (default one)."""
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
        with tempfile.TemporaryDirectory(prefix="stv-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "artifact")  # type: ignore[attr-defined]
            files = sorted(p.name for p in folder.iterdir())
            card = model_card(self.config, self.HUB_KIND, type(self).__name__, files).replace("REPO_ID", repo_id)  # type: ignore[attr-defined]
            (folder / "README.md").write_text(card)
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
        return str(getattr(info, "commit_url", info))
