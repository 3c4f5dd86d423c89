"""faster-rnnlm's training speed beside ``elman bench``'s rows (``--vs-peers``).

faster-rnnlm (yandex/faster-rnnlm) trains the same Elman network with a
Huffman-tree hierarchical softmax, in C++ on one thread: the speed that a
sampled or class softmax at large V is measured against. It reads text, so
the bench writes the text of its own synthetic data: word ids drawn from
the same Zipf law (the counts ``speed`` hands over), 20 a line, after one line that
holds every word of the vocabulary once (so its vocabulary is V words, as
the bench's model's). Its options are those of the recipes that compare the
two (hidden size Dh, sigmoid, one thread, BPTT 4 every 10 words).

It reports "Kwords/sec" as it goes (words since the epoch's start over the
time since then); the bench runs it for a fixed time and takes the last
report. The time to read the text and build the tree is not in it.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from elman.errors import ElmanError

LINE = 20                       # words a line of the synthetic text
_SPEED = re.compile(rb"([0-9.]+) Kwords/sec")


def find_binary(path: str | None) -> str:
    """The faster-rnnlm executable: ``path``, else ``faster-rnnlm`` on PATH."""
    found = shutil.which(path or "faster-rnnlm")
    if found is None:
        raise ElmanError(f"--vs-peers: no faster-rnnlm executable at {path or 'faster-rnnlm (on PATH)'}; "
                         "build yandex/faster-rnnlm and give its path")
    return found


def write_text(path: Path, counts, tokens: int, seed: int) -> None:
    """Every word w0..w{V-1} once, then ``tokens`` words drawn in proportion
    to ``counts`` (V,), LINE a line."""
    V = len(counts)
    rng = np.random.default_rng(seed)
    names = np.char.add("w", np.arange(V).astype(str))
    with open(path, "w", encoding="ascii") as f:
        for i in range(0, V, 1000):
            f.write(" ".join(names[i:i + 1000]) + "\n")
        block = LINE * 50_000
        for start in range(0, tokens, block):
            n = min(block, tokens - start) // LINE * LINE
            ids = rng.choice(V, size=n, p=counts / counts.sum()).reshape(-1, LINE)
            f.write("\n".join(" ".join(row) for row in names[ids]) + "\n")


def faster_rnnlm(binary: str, counts, Dh: int, seconds: float = 20.0, seed: int = 0,
                 words_per_s_guess: float = 400e3) -> dict:
    """Run faster-rnnlm's training on text of words drawn by ``counts`` (V,)
    for ``seconds`` after it starts training; returns {"words_per_s", "seconds", "V", "Dh", "command"}."""
    with tempfile.TemporaryDirectory(prefix="elman-peer-") as tmp:
        tmp = Path(tmp)
        train, valid = tmp / "train.txt", tmp / "valid.txt"
        V = len(counts)
        write_text(train, counts, int(words_per_s_guess * seconds * 1.5), seed)
        write_text(valid, counts[:1000], 2000, seed + 1)
        cmd = [binary, "-rnnlm", str(tmp / "model"), "-train", str(train), "-valid", str(valid),
               "-hidden", str(Dh), "-hidden-type", "sigmoid", "-threads", "1", "-bptt", "4",
               "-bptt-block", "10", "-seed", "1"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err, started = b"", None
        try:
            # Speed reports begin once the text is read and the tree built.
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and proc.poll() is None:
                chunk = proc.stderr.read1(65536)
                err += chunk
                if started is None and _SPEED.search(err):
                    started = time.monotonic()
                if started is not None and time.monotonic() - started >= seconds:
                    break
        finally:
            proc.kill()
            err += proc.stderr.read()
            proc.wait()
        speeds = _SPEED.findall(err)
        if not speeds:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ElmanError(f"--vs-peers: faster-rnnlm reported no speed ({tail[0][:200]})")
        return {"words_per_s": float(speeds[-1]) * 1e3, "seconds": seconds, "V": V, "Dh": Dh,
                "command": "faster-rnnlm " + " ".join(cmd[7:])}
