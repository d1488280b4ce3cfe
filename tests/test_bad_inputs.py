"""One case per bad input: exit code 2, one line naming the input and the fix, no traceback,
and no output folder left behind. Each case builds its files in ``tmp_path`` and returns the
command line; ``{llama}``, ``{llava}`` and ``{llama1}`` are tiny random models (``llama1``
has the same architecture as ``llama`` but other weights)."""

import json
import os

import pytest

from stv.cli.main import main

DIGITS = ["--dataset", "digits:parity_AB"]
TINY_FIT = ["--top-k", "2", "--clusters", "2", "--pairs", "4", "--context-shots", "2", "--steps", "1", "--samples", "2"]


def _jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return f"jsonl:{path}"


def _fv(tmp_path, text, name="t.json"):
    (tmp_path / name).write_text(text)
    return f"fv:{tmp_path / name}"


def _fitted(tmp_path, models, edit=None):
    """Fit tiny vectors on llama (text task) into tmp_path/tv, optionally damage them."""
    spec = _fv(tmp_path, json.dumps([{"input": f"w{i}", "output": f"W{i}"} for i in range(40)]), "fit.json")
    assert main(["fit", "--model", models["llama"], "--dataset", spec, "--out", str(tmp_path / "tv"), *TINY_FIT]) == 0
    if edit:
        edit(tmp_path / "tv")
    return [
        "eval",
        "--dataset",
        spec,
        "--vectors",
        str(tmp_path / "tv"),
        "--limit",
        "2",
        "--out",
        str(tmp_path / "out"),
    ]


def _truncate(folder):
    data = (folder / "task_vectors.safetensors").read_bytes()
    (folder / "task_vectors.safetensors").write_bytes(data[: len(data) // 2])


def _edit_config(folder, change):
    config = json.loads((folder / "task_vectors.json").read_text())
    change(config)
    (folder / "task_vectors.json").write_text(json.dumps(config))


def _disk_full(monkeypatch):
    import errno

    def refuse(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", refuse)


OUT = ["--out", "{out}"]
CASES = {
    # ---------------------------------------------------------------- model
    "unknown hub id (offline)": (lambda t, m: ["inspect", "--model", "nobody/no-such-model-xyz"], "offline"),
    "nonexistent folder": (lambda t, m: ["inspect", "--model", str(t / "no" / "such" / "model")], "does not exist"),
    "dtype not available": (lambda t, m: ["inspect", "--model", m["llama"], "--dtype", "float8"], "--dtype float8"),
    "device not available": (lambda t, m: ["inspect", "--model", m["llama"], "--device", "cuda"], "--device cuda"),
    "heads pattern not an attention output": (
        lambda t, m: ["inspect", "--model", m["llama"], "--heads-pattern", "model.layers.{layer}.mlp.down_proj"],
        "4 heads x 16",
    ),
    # ----------------------------------------------------------------- data
    "empty file": (lambda t, m: ["eval", "--model", m["llama"], "--dataset", _fv(t, "[]"), *OUT], "non-empty"),
    "empty split": (lambda t, m: ["eval", "--model", m["llama"], "--dataset", _jsonl(t, []), *OUT], "no examples"),
    "duplicate ids": (
        lambda t, m: [
            "eval",
            "--model",
            m["llama"],
            "--dataset",
            _jsonl(t, [{"id": 1, "question": "a", "answer": "b"}, {"id": 1, "question": "c", "answer": "d"}]),
            *OUT,
        ],
        "appears twice",
    ),
    "record without an answer": (
        lambda t, m: ["eval", "--model", m["llama"], "--dataset", _jsonl(t, [{"id": 1, "question": "a"}]), *OUT],
        "needs 'question' and 'answer'",
    ),
    "empty answers": (
        lambda t, m: [
            "eval",
            "--model",
            m["llama"],
            "--dataset",
            _jsonl(t, [{"id": 7, "question": "a", "answers": []}]),
            *OUT,
        ],
        "record '7' has no answer",
    ),
    "malformed JSON": (
        lambda t, m: [
            "eval",
            "--model",
            m["llama"],
            "--dataset",
            _jsonl(t, [{"id": 1, "question": "a", "answer": "b"}, '{"id": 2,']),
            *OUT,
        ],
        "d.jsonl:2 is not valid JSON",
    ),
    # ------------------------------------------------------------- settings
    "negative shots": (lambda t, m: ["eval", "--model", m["llama"], *DIGITS, "--shots", "-3", *OUT], "--shots -3"),
    "zero context shots": (
        lambda t, m: ["fit", "--model", m["llama"], *DIGITS, *TINY_FIT[:6], "--context-shots", "0", *OUT],
        "shots=0 (--context-shots)",
    ),
    "zero limit": (lambda t, m: ["eval", "--model", m["llama"], *DIGITS, "--limit", "0", *OUT], "--limit 0"),
    "zero batch size": (
        lambda t, m: ["eval", "--model", m["llama"], *DIGITS, "--batch-size", "0", *OUT],
        "--batch-size 0",
    ),
    "more clusters than bank samples": (
        lambda t, m: ["fit", "--model", m["llama"], *DIGITS, "--clusters", "50", "--pairs", "8", *OUT],
        "clusters=50 exceeds pairs=8",
    ),
    "unknown policy at fit": (
        lambda t, m: ["fit", "--model", m["llama"], *DIGITS, *TINY_FIT, "--policy", "sometimes", *OUT],
        "policy='sometimes'",
    ),
    "prompt longer than the model's positions": (
        lambda t, m: ["eval", *DIGITS, "--shots", "700", "--limit", "1", *OUT],
        "exceeds",
    ),
    # ------------------------------------------------------------ artifacts
    "truncated safetensors": (lambda t, m: _fitted(t, m, _truncate) + ["--model", m["llama"]], "cannot be read"),
    "invalid artifact JSON": (
        lambda t, m: _fitted(t, m, lambda f: (f / "task_vectors.json").write_text("{")) + ["--model", m["llama"]],
        "task_vectors.json is not valid JSON",
    ),
    "head_dim edited": (
        lambda t, m: (
            _fitted(t, m, lambda f: _edit_config(f, lambda c: c.update(head_dim=32))) + ["--model", m["llama"]]
        ),
        "says head_dim 32",
    ),
    "vectors from other weights": (lambda t, m: _fitted(t, m) + ["--model", m["llama1"]], "--allow-other-weights"),
    # ---------------------------------------------------------------- files
    "out is a file": (lambda t, m: ["eval", "--model", m["llama"], *DIGITS, "--out", str(_file(t))], "is a file"),
    "out inside a file": (
        lambda t, m: ["fit", "--model", m["llama"], *DIGITS, "--out", str(_file(t) / "x")],
        "is a file",
    ),
    "disk full during the scan": (
        lambda t, m: ["fit", "--model", m["llama"], *DIGITS, *TINY_FIT, *OUT],
        "cannot reserve",
    ),
    "unknown compare variant": (
        lambda t, m: ["compare", "--model", m["llama"], "--variants", "stv+,best", *OUT],
        "unknown STV variant 'best'",
    ),
    "compare seeds not integers": (
        lambda t, m: ["compare", "--model", m["llama"], "--seeds", "0,one", *OUT],
        "--seeds '0,one'",
    ),
    "config asks for remote code": (
        lambda t, m: ["inspect", "--config", str(_config(t)), "--model", m["llama"]],
        "--trust-remote-code",
    ),
    # -------------------------------------------- second sweep: data schemas
    "jsonl line is a list": (
        lambda t, m: ["eval", "--model", m["llama"], "--dataset", _jsonl(t, ["[1, 2]"]), *OUT],
        "d.jsonl:1 is a JSON list",
    ),
    "jsonl question not a string": (
        lambda t, m: ["eval", "--model", m["llama"], "--dataset", _jsonl(t, [{"question": 3, "answer": "b"}]), *OUT],
        "'question' must be a string, got int 3",
    ),
    "jsonl images a string": (
        lambda t, m: [
            "eval",
            "--model",
            m["llava"],
            "--dataset",
            _jsonl(t, [{"question": "q", "answer": "b", "images": "img1.png"}]),
            *OUT,
        ],
        "'images' must be a list of file names",
    ),
    "jsonl NaN answer": (
        lambda t, m: [
            "eval",
            "--model",
            m["llama"],
            "--dataset",
            _jsonl(t, ['{"question": "q", "answer": NaN}']),
            *OUT,
        ],
        "NaN is not a value",
    ),
    "jsonl unknown split": (
        lambda t, m: [
            "eval",
            "--model",
            m["llama"],
            "--dataset",
            _jsonl(t, [{"question": "q", "answer": "b"}]),
            "--split",
            "bogus",
            *OUT,
        ],
        "split 'bogus' must be one of all, test, train",
    ),
    "fv output not a string": (
        lambda t, m: [
            "eval",
            "--model",
            m["llama"],
            "--dataset",
            _fv(t, '[{"input": "a", "output": ["A", "b"]}]'),
            *OUT,
        ],
        "'output' must be a non-empty string",
    ),
    "fv output with a line break": (
        lambda t, m: ["eval", "--model", m["llama"], "--dataset", _fv(t, '[{"input": "a", "output": "A\\nB"}]'), *OUT],
        "has a line break",
    ),
    "too few demonstrations": (
        lambda t, m: [
            "eval",
            "--model",
            m["llama"],
            "--dataset",
            _fv(t, json.dumps([{"input": f"w{i}", "output": f"W{i}"} for i in range(6)])),
            "--split",
            "all",
            "--train-split",
            "all",
            "--shots",
            "9",
            *OUT,
        ],
        "lower --shots",
    ),
    # ------------------------------------------ second sweep: flags and configs
    "lr not a number": (lambda t, m: ["fit", "--model", m["llama"], *DIGITS, "--lr", "nan", *OUT], "lr=nan (--lr)"),
    "negative lr": (lambda t, m: ["fit", "--model", m["llama"], *DIGITS, "--lr", "-1", *OUT], "lr=-1.0 (--lr)"),
    "negative seed": (lambda t, m: ["fit", "--model", m["llama"], *DIGITS, "--seed", "-1", *OUT], "seed=-1 (--seed)"),
    "zero samples": (
        lambda t, m: ["fit", "--model", m["llama"], *DIGITS, "--samples", "0", *OUT],
        "samples=0 (--samples)",
    ),
    "config is a JSON list": (
        lambda t, m: ["fit", "--config", str(_config(t, [1, 2])), "--model", m["llama"], *DIGITS, *OUT],
        "holds a JSON list",
    ),
    "config key misspelt": (
        lambda t, m: ["fit", "--config", str(_config(t, {"stepz": 3})), "--model", m["llama"], *DIGITS, *OUT],
        "unknown key 'stepz'; did you mean 'steps'?",
    ),
    "config value of the wrong type": (
        lambda t, m: ["fit", f"--config={_config(t, {'steps': 'many'})}", "--model", m["llama"], *DIGITS, *OUT],
        "key 'steps' takes an int",
    ),
    "lora lr not a number": (
        lambda t, m: ["fit", "--model", m["llama"], *DIGITS, "--method", "lora", "--lora-lr", "nan", *OUT],
        "lr=nan",
    ),
    # --------------------------------------------------- second sweep: files
    "non-finite task vectors": (lambda t, m: _fitted(t, m, _infinite) + ["--model", m["llama"]], "non-finite numbers"),
    "score: predictions file missing": (
        lambda t, m: ["score", "--metric", "choice", "--predictions", str(t / "nope.jsonl"), "--annotations", "x"],
        "--predictions " + "{tmp}/nope.jsonl: no such file",
    ),
    "score: a question predicted twice": (
        lambda t, m: [
            "score",
            "--metric",
            "choice",
            "--predictions",
            _jsonl(t, [{"question_id": 1, "answer": "a"}, {"question_id": 1, "answer": "b"}]).removeprefix("jsonl:"),
            "--annotations",
            _jsonl(t, [{"question_id": 1, "answer": "a"}], "a.jsonl").removeprefix("jsonl:"),
        ],
        "'1' is predicted twice",
    ),
    "bench: unknown model shape": (
        lambda t, m: ["bench", "--device", "cuda", "--shapes", "gpt5", "--write", "{out}/b.md"],
        "--shapes gpt5: unknown gpt5",
    ),
    "bench: no cuda device here": (
        lambda t, m: ["bench", "--device", "cuda", "--write", "{out}/b.md"],
        "no cuda device",
    ),
}


def _file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    return path


def _config(tmp_path, content=None):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"trust_remote_code": True} if content is None else content))
    return path


def _infinite(folder):
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "task_vectors.safetensors")
    tensors["vectors"][0, 0] = float("inf")
    save_file(tensors, folder / "task_vectors.safetensors")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from stv.testing import build

    root = tmp_path_factory.mktemp("bad")
    return {
        "llama": str(build("llama", root / "llama")),
        "llava": str(build("llava", root / "llava")),
        "llama1": str(build("llama", root / "llama1", seed=1)),
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, models, capsys, monkeypatch):
    monkeypatch.delenv("STV_DEBUG", raising=False)
    make, expected = CASES[case]
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in make(tmp_path, models)]
    capsys.readouterr()
    if case == "disk full during the scan":
        _disk_full(monkeypatch)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    assert expected.replace("{tmp}", str(tmp_path)) in err[0], err[0]
    assert not (tmp_path / "out").exists(), "a failed command left its output folder behind"


def test_score_reads_the_librarys_own_predictions(tmp_path, models, capsys):
    spec = _fv(tmp_path, json.dumps([{"input": f"w{i}", "output": f"W{i}"} for i in range(20)]))
    assert (
        main(
            [
                "eval",
                "--model",
                models["llama"],
                "--dataset",
                spec,
                "--split",
                "all",
                "--limit",
                "3",
                "--max-new-tokens",
                "2",
                "--out",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    preds = tmp_path / "ev" / "predictions.jsonl"
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    (tmp_path / "ann.jsonl").write_text(
        "".join(json.dumps({"question_id": r["question_id"], "answer": r["answer"]}) + "\n" for r in rows)
    )
    capsys.readouterr()
    assert (
        main(["score", "--metric", "choice", "--predictions", str(preds), "--annotations", str(tmp_path / "ann.jsonl")])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["accuracy"] == 100.0


def test_scan_takes_only_the_flags_it_uses(capsys):
    """`stv scan` rejects REINFORCE flags it would ignore (exit 2, argparse's message)."""
    from stv.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["scan", "--dataset", "digits:parity_word", "--out", "x", "--steps", "5"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --steps 5" in capsys.readouterr().err
