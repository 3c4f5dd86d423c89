"""The documentation is held to the code.

- docs/reference/cli.md is exactly what ``python -m elman.cli.reference``
  writes from the argument parser;
- every name in docs/reference/python-api.md exists;
- every command in a ```sh block of README.md and docs/ runs, on a tiny
  corpus laid out under the names the docs use, one page at a time in the
  page's order (```python blocks too, in between), or carries a marker in
  its comment: "needs a big corpus", "needs a cluster", "takes minutes" or "needs
  the network";
  `make X` names a Makefile target and `pip install 'elman[X]'` an extra.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import helpers
from elman import cli
from elman.cli.reference import reference
from elman.data import kjv

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
MARKERS = ("needs a big corpus", "needs a cluster", "needs the network", "takes minutes")
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.S | re.M)
TRAIN_EPOCHS = ["--epochs", "1"]          # the commands run; what a tiny corpus learns does not matter


def blocks(page: Path):
    """(kind, text) of each ```sh and ```python block, in order."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(page.read_text("utf-8"))]


def commands(text: str):
    """(words, command line without its comment, comment) of each line of a sh block."""
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            bare = re.sub(r"\s+#\s.*$", "", line)
            yield words, bare, line[len(bare):]


def test_cli_reference_is_the_parser():
    page = (ROOT / "docs" / "reference" / "cli.md").read_text("utf-8")
    assert page == reference(), "regenerate it: python -m elman.cli.reference > docs/reference/cli.md"


def test_python_api_names_exist():
    import importlib
    module, seen = None, 0
    for line in (ROOT / "docs" / "reference" / "python-api.md").read_text("utf-8").splitlines():
        if m := re.match(r"## `([\w.]+)`", line):
            module = importlib.import_module(m.group(1))
        elif module and (m := re.match(r"\| `([\w.]+)[(`]", line)):
            obj = module
            for part in m.group(1).split("."):
                obj = getattr(obj, part, None) or importlib.import_module(f"{obj.__name__}.{part}")
            seen += 1
    assert seen >= 15


# -- the workspace: a tiny corpus under the names the docs use ---------------------------------

WORDS = {"subj": "god moses the king the lord israel david".split(),
         "verb": "said created saw heard called blessed made".split(),
         "obj": "the heaven the earth the light the people the land his sons".split()}


def tiny_text(lines: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(lines):
        s = " ".join([rng.choice(["and", "in the beginning", "then"]), rng.choice(WORDS["subj"]),
                      rng.choice(WORDS["verb"]), rng.choice(WORDS["obj"]), rng.choice([".", ", and it was good .", ":"])])
        out.append(s)
    return "\n".join(out) + "\n"


def write_kjv_like(directory: Path) -> None:
    """train/valid/test.txt with a manifest, so the demo's corpus build takes them as complete."""
    directory.mkdir(parents=True)
    texts = {"train.txt": tiny_text(200, 0), "valid.txt": tiny_text(40, 1), "test.txt": tiny_text(40, 2)}
    for name, text in texts.items():
        (directory / name).write_text(text, encoding="utf-8")
    import json
    (directory / kjv.MANIFEST).write_text(json.dumps(
        {"recipe": kjv.RECIPE, "files": {n: kjv._describe(t) for n, t in texts.items()}}), encoding="utf-8")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("docs-ws")
    corpus = ws / "home" / ".cache" / "elman" / kjv.RECIPE
    write_kjv_like(corpus)
    for name in ("train.txt", "valid.txt", "test.txt"):
        shutil.copy(corpus / name, ws / name)
    lines = (corpus / "test.txt").read_text().splitlines()
    (ws / "sentences.txt").write_text("\n".join(lines[:5]) + "\n")
    (ws / "nbest.txt").write_text("".join(f"utt{u} {lines[u * 3 + k]}\n" for u in range(3) for k in range(3)))
    train_words = [s.split() for s in (corpus / "train.txt").read_text().splitlines()]
    helpers.write_arpa(ws / "kjv.arpa", helpers.ngram_model(train_words))
    with _in(ws):
        rc, _, err = run_elman(["train", "--train", str(corpus), "--out", "runs/kjv", *TRAIN_EPOCHS])
    assert rc == 0, err
    return ws


@contextlib.contextmanager
def _in(ws: Path):
    saved = {k: os.environ.get(k) for k in ("HOME", "XDG_CACHE_HOME")}
    cwd = Path.cwd()
    os.environ["HOME"] = str(ws / "home")
    os.environ.pop("XDG_CACHE_HOME", None)
    os.chdir(ws)
    try:
        yield
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_elman(argv, stdin: Path | None = None):
    """cli.main in this process (no interpreter start a command): (rc, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(open(stdin, "rb"), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main([os.path.expanduser(a) for a in argv])
    finally:
        if stdin is not None:
            sys.stdin.close()
        sys.stdin = saved
    return rc, out.getvalue(), err.getvalue()


def run_shell(line: str):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env, timeout=300)
    return r.returncode, r.stdout, r.stderr


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


def extras() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def run_command(words: list[str], line: str) -> str | None:
    """Run one documented command; None when it ran, else why it did not."""
    if words[0] == "make":
        assert words[1] in makefile_targets(), f"no Makefile target {words[1]!r}"
        return "make: its target exists"
    if words[:2] == ["pip", "install"]:
        named = re.findall(r"elman\[([\w,]+)\]", line)
        assert named and all(e in extras() for n in named for e in n.split(",")), line
        return "pip: its extra exists"
    if words[0] == "elman":
        if words[1] == "train" and not {"--epochs", "--minutes", "--resume"} & set(words):
            words = words + TRAIN_EPOCHS
        stdin = None
        if "<" in words:
            at = words.index("<")
            stdin, words = Path(words[at + 1]), words[:at] + words[at + 2:]
        rc, out, err = run_elman(words[1:], stdin)
        ok = rc == 0 or (words[1] == "check" and rc == 1 and out.split()[0] in VERDICTS)
        assert ok, f"{line}\nexit {rc}\n{err[-2000:]}"
        return None
    if words[0] == "mpiexec":
        if not shutil.which("mpiexec", path=str(Path(sys.executable).parent)):
            return "mpiexec: not installed"
        if "--epochs" not in words:
            line += " " + " ".join(TRAIN_EPOCHS)
    rc, out, err = run_shell(line)
    assert rc == 0, f"{line}\nexit {rc}\n{err[-2000:]}"
    return None


VERDICTS = {"correct", "sign-flipped", "transposed", "scaled", "missing-factor", "non-conforming", "wrong"}


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=page_id)
def test_every_command_runs_or_is_marked(page, workspace, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws, symlinks=True)
    found = blocks(page)
    trains_kjv = any(w[:2] == ["elman", "train"] and "runs/kjv" in w and "--resume" not in w
                     for kind, text in found if kind == "sh" for w, _, _ in commands(text))
    if trains_kjv:
        shutil.rmtree(ws / "runs" / "kjv")
    ran = 0
    with _in(ws):
        for kind, text in found:
            if kind == "python":
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(text, f"{page_id(page)}:python", "exec"), {"__name__": "__docs__"})
                ran += 1
                continue
            for words, line, comment in commands(text):
                if any(m in comment for m in MARKERS):
                    continue
                if run_command(words, line) is None:
                    ran += 1
    assert ran, f"{page_id(page)}: nothing ran"
