"""Model files: safetensors + vocab.txt + JSON, written so a crash never
leaves a half-written model, read without ever executing code.

A checkpoint is a directory holding

    model.safetensors      tensors L, I, H, U, b1, b2 (+ any extra arrays)
    vocab.txt              one token a line, id = 0-based line number
    config.json            format "elman-2", V, d, Dh, level, output ("full" or
                           "classes"), direct ({"size", "order"}, with direct
                           connections), the caller's settings, sha256 of
                           the other files, train_state
    optimizer.safetensors  optional: optimizer arrays and the carried hidden state

A training run directory DIR holds the best model as a checkpoint (DIR itself,
what ``elman eval --model DIR`` reads) and the latest training state as a
second checkpoint in ``DIR/last`` (what ``--resume`` reads).

Commit protocol: all files of a new checkpoint are written and fsynced into
``DIR/.pending/``, then ``DIR/.pending/COMMIT`` is written atomically (the
commit point), then each file is renamed into DIR, then COMMIT is removed.
Before COMMIT exists the old checkpoint is untouched; after it, the new one is
complete on disk, and a reader (or the next writer) that finds COMMIT takes
each file from .pending when it is still there. A SIGKILL at any instant
therefore leaves either the old or the new checkpoint, never a mixture.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from elman.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_dir, json_bytes
from elman.core import rnnlm_direct
from elman.model import PARAM_NAMES, Params
from elman.model.outputs import model_outputs, output_name
from elman.data import LEVELS, Vocab
from elman.errors import ElmanError
from elman.fast.threads import beside
from elman.tensorfile import read_buffer, read_safetensors

FORMAT = "elman-2"
# Formats this elman reads: elman-1 has no
# "output" or "direct" key and no tensors beyond the seed's and the classes'.
READS = ("elman-1", "elman-2")
MODEL_FILE = "model.safetensors"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
CHECKPOINT_FILES = (MODEL_FILE, OPTIMIZER_FILE, VOCAB_FILE, CONFIG_FILE)  # config last: readers without the protocol see it change last
LAST = "last"
PENDING = ".pending"
COMMIT = "COMMIT"
__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "save_checkpoint",
           "prepare_checkpoint",
           "load_model", "load_params", "load_checkpoint", "load_training_state", "has_model", "remove_checkpoints",
           "checkpoint_dir", "read_safetensors", "FORMAT", "LAST"]
REQUIRED_TENSORS = PARAM_NAMES
# Keys save_checkpoint computes itself; a caller's value must agree.
DIRECT_HASHES = ("elman", "rnnlm")      # config.json's "direct_hash" (absent: "elman")
DERIVED_KEYS = ("format", "V", "d", "Dh", "dtype", "files", "vocab_counts", "output", "direct", "scoring")
# How the models this elman writes score (``Params.scoring``); a file without
# the key scores as it always did, by "numpy".
SCORING = "compiled"


# -- checksums ----------------------------------------------------------------------

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the commit protocol ---------------------------------------------------------------------

def _committed_names(ckdir: Path) -> list[str] | None:
    """File names of a committed but unfinished write, or None."""
    try:
        obj = json.loads((ckdir / PENDING / COMMIT).read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    names = obj.get("files") if isinstance(obj, dict) else None
    if not isinstance(names, list) or not set(names) <= set(CHECKPOINT_FILES):
        return None
    return names


def _resolve(ckdir: Path) -> dict[str, Path]:
    """Where each file of the current checkpoint lies, without writing anything."""
    names = _committed_names(ckdir)
    if names is None:
        return {n: ckdir / n for n in CHECKPOINT_FILES if (ckdir / n).exists()}
    out = {}
    for n in names:
        p = ckdir / PENDING / n
        out[n] = p if p.exists() else ckdir / n
    return out


def _finish(ckdir: Path) -> None:
    """Roll a committed write forward, or discard an uncommitted one."""
    pending = ckdir / PENDING
    if not pending.exists():
        return
    names = _committed_names(ckdir)
    if names is not None:
        for n in names:
            if (pending / n).exists():
                os.replace(pending / n, ckdir / n)
        for n in CHECKPOINT_FILES:
            if n not in names and (ckdir / n).exists():
                os.unlink(ckdir / n)
        fsync_dir(ckdir)
        os.unlink(pending / COMMIT)
        fsync_dir(pending)
    shutil.rmtree(pending, ignore_errors=True)
    for n in CHECKPOINT_FILES:  # temp files of a killed atomic write (ours only)
        for stale in ckdir.glob(f".{n}.*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass
    fsync_dir(ckdir)


class _Linked(NamedTuple):
    """A file another committed checkpoint holds with these very bytes: linked, not written again."""
    path: Path
    sha256: str
    bytes: int


def _linked_model(ckdir: Path) -> _Linked | None:
    """The committed model file of ``ckdir``, with its checksum and size as its config.json has them (None: none)."""
    files = _resolve(Path(ckdir))
    try:
        entry = json.loads(files[CONFIG_FILE].read_text("utf-8"))["files"][MODEL_FILE]
        path = files[MODEL_FILE]
        if path.stat().st_size != entry["bytes"]:
            return None
        return _Linked(path, entry["sha256"], entry["bytes"])
    except (KeyError, OSError, ValueError, TypeError):
        return None


def _place(path: Path, data) -> None:
    """Write ``data`` (bytes) to ``path`` atomically, or hard-link a ``_Linked``
    file there (its bytes already written and synced; a later write of the
    original replaces its name, not its contents). Where links fail, a copy."""
    if not isinstance(data, _Linked):
        atomic_write_bytes(path, data)
        return
    try:
        os.link(data.path, path)
        fsync_dir(path.parent)
    except OSError:
        atomic_write_bytes(path, data.path.read_bytes())


def _commit(ckdir: Path, files: dict) -> None:
    try:
        ckdir.mkdir(parents=True, exist_ok=True)
        _finish(ckdir)
        pending = ckdir / PENDING
        pending.mkdir()
    except OSError as exc:
        raise ElmanError(f"{ckdir}: cannot write a checkpoint there ({exc.strerror or exc})") from None
    for name, data in files.items():
        _place(pending / name, data)
    atomic_write_json(pending / COMMIT, {"files": list(files)})
    try:
        _finish(ckdir)
    except OSError as exc:
        raise ElmanError(f"{ckdir}: checkpoint committed but not yet in place "
                         f"({exc.strerror or exc}); the next elman command on it finishes the move") from None


# -- saving ---------------------------------------------------------------------------------

def checkpoint_dir(run_dir, slot: str = "best") -> Path:
    """The checkpoint of a run: ``best`` is the run directory itself, ``last`` its ``last/``."""
    if slot not in ("best", "last"):
        raise ValueError(f"slot must be 'best' or 'last', not {slot!r}")
    return Path(run_dir) if slot == "best" else Path(run_dir) / LAST


def _safetensors_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save
    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata={"format": FORMAT})


def save_checkpoint(run_dir, params_dict: dict, vocab: Vocab, config: dict,
                    train_state: dict | None = None, optimizer_arrays: dict | None = None,
                    slot: str = "best", model_from: str | None = None) -> Path:
    """Write one checkpoint atomically; returns its directory.

    ``model_from``: the slot of a checkpoint of this run whose model file
    holds these very arrays (the caller's promise: the best model at an
    epoch's end is the last one), hard-linked in place of a second copy.

    ``config`` is merged into config.json (JSON-able values; no NaN or
    infinity). ``train_state`` (epoch, batch index, lr, RNG state, ...) is
    stored as config.json's ``"train_state"``; ``optimizer_arrays`` (optimizer
    moments, the carried hidden state) go to optimizer.safetensors.
    """
    return prepare_checkpoint(run_dir, params_dict, vocab, config, train_state, optimizer_arrays,
                              slot, model_from).write()


class Prepared(NamedTuple):
    """A checkpoint held in memory, its arrays already copied into the files'
    bytes (the arrays may change from here on): ``write()`` puts it on disk,
    on any thread."""
    ckdir: Path
    files: dict             # name -> bytes (config.json made in ``write``)
    cfg: dict               # config.json but its "files"
    model_from: Path | None  # the checkpoint whose model file to link, when it holds one

    def write(self) -> Path:
        files = dict(self.files)
        linked = _linked_model(self.model_from) if self.model_from else None
        if linked:
            files[MODEL_FILE] = linked
        cfg = {**self.cfg, "files": {n: {"sha256": b.sha256, "bytes": b.bytes} if isinstance(b, _Linked) else
                                     {"sha256": _sha256(b), "bytes": len(b)} for n, b in files.items()}}
        try:
            files[CONFIG_FILE] = json_bytes(cfg)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config is not strict JSON: {exc}") from None
        _commit(self.ckdir, files)
        return self.ckdir


def prepare_checkpoint(run_dir, params_dict: dict, vocab: Vocab, config: dict,
                       train_state: dict | None = None, optimizer_arrays: dict | None = None,
                       slot: str = "best", model_from: str | None = None, model_bytes: bytes | None = None
                       ) -> Prepared:
    """``save_checkpoint``'s checkpoint, checked and in memory, not yet
    written. ``model_bytes``: the model file's bytes when the caller has
    them (those of ``model_from``'s own ``Prepared``), else made here."""
    ckdir = checkpoint_dir(run_dir, slot)
    missing = [n for n in REQUIRED_TENSORS if n not in params_dict]
    if missing:
        raise ValueError(f"params_dict lacks {', '.join(missing)}")
    L = np.asarray(params_dict["L"])
    V, d = L.shape
    Dh = np.asarray(params_dict["H"]).shape[0]
    _check_shapes({k: np.shape(v) for k, v in params_dict.items()}, V, d, Dh, len(vocab), "params_dict")
    derived = {"format": FORMAT, "V": int(V), "d": int(d), "Dh": int(Dh), "dtype": str(L.dtype),
               "output": output_name(params_dict), "scoring": SCORING}
    if "D" in params_dict:
        derived["direct"] = {"size": int(np.size(params_dict["D"])),
                             "order": int(np.asarray(params_dict["direct_order"]).reshape(-1)[0])}
    for key, value in derived.items():
        if key in config and config[key] != value:
            raise ValueError(f"config[{key!r}] = {config[key]!r} but the parameters give {value!r}")
    files = {MODEL_FILE: model_bytes if model_bytes is not None else _safetensors_bytes(params_dict)}
    if optimizer_arrays:
        files[OPTIMIZER_FILE] = _safetensors_bytes(optimizer_arrays)
    files[VOCAB_FILE] = vocab.to_text().encode("utf-8")
    cfg = {**derived, "level": config.get("level", "word")}
    cfg.update({k: v for k, v in config.items() if k not in DERIVED_KEYS})
    if vocab.counts is not None:
        cfg["vocab_counts"] = vocab.counts.tolist()
    if train_state is not None:
        cfg["train_state"] = train_state
    return Prepared(ckdir, files, cfg, checkpoint_dir(run_dir, model_from) if model_from else None)


def has_model(run_dir) -> bool:
    """Whether ``run_dir`` holds a checkpoint (best or last) that a new run would replace.

    A write killed before its commit left nothing: that does not count."""
    run_dir = Path(run_dir)
    return any(n in (CONFIG_FILE, MODEL_FILE) for ckdir in (run_dir, run_dir / LAST)
               for n in _resolve(ckdir))


def remove_checkpoints(run_dir) -> None:
    """Delete the checkpoints of ``run_dir`` (for --force); other files stay."""
    run_dir = Path(run_dir)
    try:
        shutil.rmtree(run_dir / LAST, ignore_errors=False) if (run_dir / LAST).exists() else None
        shutil.rmtree(run_dir / PENDING) if (run_dir / PENDING).exists() else None
        for n in CHECKPOINT_FILES:
            if (run_dir / n).exists():
                (run_dir / n).unlink()
    except OSError as exc:
        raise ElmanError(f"{run_dir}: cannot remove the old model ({exc.strerror or exc})") from None
    fsync_dir(run_dir)


# -- loading ------------------------------------------------------------------------------------

def _check_shapes(shapes: dict, V: int, d: int, Dh: int, nvocab: int, where) -> None:
    for name, shape in Params.shapes(V, d, Dh).items():
        if tuple(shapes[name]) != shape:
            raise ElmanError(f"{where}: tensor {name} has shape {tuple(shapes[name])}, "
                             f"expected {shape} from V={V}, d={d}, Dh={Dh}")
    if nvocab != V:
        raise ElmanError(f"{where}: {nvocab} tokens in vocab.txt but the model has V={V}")


def _read_config(path: Path, data: bytes) -> dict:
    try:
        cfg = json.loads(bytes(data).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ElmanError(f"{path}: not UTF-8 (byte offset {exc.start})") from None
    except ValueError as exc:
        raise ElmanError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ElmanError(f"{path}: JSON nested too deeply to be an elman config") from None
    if not isinstance(cfg, dict) or "format" not in cfg:
        raise ElmanError(f"{path}: not an elman config (no \"format\" key)")
    if cfg["format"] not in READS:
        raise ElmanError(f"{path}: model format {cfg['format']!r} is not supported (this elman reads "
                         f"{' and '.join(map(repr, READS))})")
    if cfg.get("level", "word") not in LEVELS:
        raise ElmanError(f"{path}: unknown level {cfg['level']!r} (expected one of {', '.join(LEVELS)})")
    for key in ("V", "d", "Dh"):
        if not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise ElmanError(f"{path}: {key!r} missing or not a positive integer")
    return cfg


def _check_layers(cfg: dict, params: dict, where) -> None:
    """config.json's "output" and "direct" (elman-2) agree with the tensors."""
    if cfg["format"] == "elman-1":
        return
    output, outputs = cfg.get("output"), model_outputs()
    if output not in outputs:
        raise ElmanError(f"{where}: output layer {output!r} is not one this elman knows "
                         f"({', '.join(outputs)})")
    extra = [n for names in outputs.values() for n in names if n in params]
    if sorted(extra) != sorted(outputs[output]):
        raise ElmanError(f"{where}: the config says a {output} output layer but the tensors are "
                         f"{', '.join(extra) or 'those of a full softmax'}")
    direct = cfg.get("direct")
    if direct is None:
        if "D" in params:
            raise ElmanError(f"{where}: tensor D (direct connections) but no \"direct\" in the config")
        return
    if not isinstance(direct, dict) or "D" not in params or np.size(params.get("direct_order", [])) != 1:
        raise ElmanError(f"{where}: the config says direct connections but tensors D and direct_order (one "
                         f"integer) are missing")
    got = {"size": int(params["D"].size), "order": int(params["direct_order"].reshape(-1)[0])}
    if {k: direct.get(k) for k in got} != got:
        raise ElmanError(f"{where}: direct connections {got} in the tensors, {direct} in the config")


def _verify(cfg: dict, cfg_path: Path, name: str, path: Path, digest: str) -> None:
    entry = cfg.get("files", {}).get(name)
    if entry is None:
        return  # a model written by another program may carry no checksums
    if not isinstance(entry, dict) or digest != entry.get("sha256"):
        raise ElmanError(f"{path}: does not match the sha256 recorded in {cfg_path} "
                         "(changed, truncated, or from another checkpoint)")


def _load(ckdir: Path, want_optimizer: bool):
    if not ckdir.exists():
        raise ElmanError(f"{ckdir}: no such model directory")
    if not ckdir.is_dir():
        raise ElmanError(f"{ckdir}: not a directory (a model is a directory holding {CONFIG_FILE}, "
                         f"{MODEL_FILE} and {VOCAB_FILE})")
    for attempt in range(3):  # a writer may move files between resolve and read
        where = _resolve(ckdir)
        try:
            blobs = {n: read_buffer(p) for n, p in where.items()
                     if n != OPTIMIZER_FILE or want_optimizer}
            break
        except FileNotFoundError as exc:
            if attempt == 2:
                raise ElmanError(f"{exc.filename}: vanished while reading (is another process "
                                 "rewriting this model?)") from None
        except OSError as exc:
            raise ElmanError(f"{exc.filename or ckdir}: cannot read it ({exc.strerror or exc})") from None
    if CONFIG_FILE not in where:
        if (ckdir / LAST / CONFIG_FILE).exists():
            raise ElmanError(f"{ckdir}: no finished model yet, only the training state in "
                             f"{ckdir / LAST} (resume training, or use --model {ckdir / LAST})")
        raise ElmanError(f"{ckdir / CONFIG_FILE}: no such file (not an elman model directory)")
    # The checksums on another core while this one parses (hashlib lets go of the GIL).
    sums = beside(lambda: {n: _sha256(data) for n, data in blobs.items() if n != CONFIG_FILE})
    cfg_path = where[CONFIG_FILE]
    cfg = _read_config(cfg_path, blobs[CONFIG_FILE])
    for n in (MODEL_FILE, VOCAB_FILE):
        if n not in where:
            raise ElmanError(f"{ckdir / n}: no such file (not a complete elman model)")
    params = read_safetensors(where[MODEL_FILE], blobs[MODEL_FILE])
    missing = [n for n in REQUIRED_TENSORS if n not in params]
    if missing:
        raise ElmanError(f"{where[MODEL_FILE]}: no tensor named {', '.join(missing)} (not an elman model)")
    for name in REQUIRED_TENSORS:
        a = params[name]
        if a.dtype.kind != "f":
            raise ElmanError(f"{where[MODEL_FILE]}: tensor {name} has dtype {a.dtype}, expected floats")
    _check_layers(cfg, params, f"{where[MODEL_FILE]} / {cfg_path}")
    try:
        text = bytes(blobs[VOCAB_FILE]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ElmanError(f"{where[VOCAB_FILE]}: not valid UTF-8 (byte offset {exc.start})") from None
    vocab = Vocab.from_text(text, None, where[VOCAB_FILE])
    counts = cfg.get("vocab_counts")
    if isinstance(counts, list) and len(counts) == len(vocab):
        vocab.counts = np.asarray(counts, dtype=np.int64)
    _check_shapes({k: v.shape for k, v in params.items()}, cfg["V"], cfg["d"], cfg["Dh"], len(vocab),
                  f"{where[MODEL_FILE]} / {cfg_path}")
    for n, digest in sums().items():
        _verify(cfg, cfg_path, n, where[n], digest)
    optimizer = None
    if want_optimizer and OPTIMIZER_FILE in blobs:
        optimizer = read_safetensors(where[OPTIMIZER_FILE], blobs[OPTIMIZER_FILE])
    return params, vocab, cfg, optimizer


def load_model(run_dir, slot: str = "best") -> tuple[dict, Vocab, dict]:
    """``(params_dict, vocab, config)`` of a checkpoint; every problem is one ElmanError."""
    params, vocab, cfg, _ = _load(checkpoint_dir(run_dir, slot), want_optimizer=False)
    return params, vocab, cfg


def load_params(run_dir, slot: str = "best") -> tuple[Params, Vocab, dict]:
    """``(Params, Vocab, config)`` of a saved model, its tensors checked as a
    model's (names, shapes, finite values); every problem is one ElmanError."""
    arrays, vocab, cfg = load_model(run_dir, slot)
    where = checkpoint_dir(run_dir, slot) / MODEL_FILE
    try:
        p = Params.from_dict(arrays)     # writable views of the file's one buffer (``tensorfile``)
    except ValueError as exc:
        raise ElmanError(f"{where}: {exc}") from None
    bad = [k for k, v in p.as_dict().items() if not _finite(v)]
    if bad:
        raise ElmanError(f"{where}: tensor {bad[0]} holds NaN or infinite values")
    p.scoring = cfg.get("scoring", "numpy")
    if p.scoring not in ("compiled", "numpy"):
        raise ElmanError(f"{checkpoint_dir(run_dir, slot) / CONFIG_FILE}: \"scoring\" is {p.scoring!r}, "
                         "not \"compiled\" or \"numpy\"")
    set_direct_hash(p, cfg.get("direct_hash", "elman"), where, cfg.get("direct_oov"))
    return p, vocab, cfg


def _finite(a: np.ndarray) -> bool:
    """Whether every value of ``a`` is finite. A NaN or an infinity makes the
    float64 sum so; the sum needs no (N,) mask in fresh memory, which on
    this kind of machine costs more than the pass (a finite sum of float32
    values cannot overflow float64; one that does is checked value by value)."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(a, axis=None, dtype=np.float64)
    return bool(np.isfinite(total)) or bool(np.isfinite(a).all())


def set_direct_hash(p: Params, scheme, where, oov=None) -> None:
    """p.direct_hash = ``scheme`` (config.json's "direct_hash": "elman",
    the default, or "rnnlm"), checked against p's tensors; p.direct_oov =
    ``oov`` (config.json's "direct_oov": with "rnnlm", the id out of
    RNNLM's vocabulary)."""
    if oov is not None and (scheme != "rnnlm" or type(oov) is not int or not 0 <= oov < p.V):
        raise ElmanError(f"{where}: direct_oov {oov!r} is not a word id below {p.V} of a model hashed RNNLM's way")
    if scheme not in DIRECT_HASHES:
        raise ElmanError(f"{where}: direct_hash {scheme!r} is not one this elman knows ({', '.join(DIRECT_HASHES)})")
    if scheme == "rnnlm" and p.D is not None:
        try:
            rnnlm_direct.check(p.D, p.direct_order, p.V, p.classes)
        except ValueError as exc:
            raise ElmanError(f"{where}: {exc}") from None
    p.direct_hash, p.direct_oov = scheme, oov


def load_checkpoint(run_dir, slot: str = "last") -> tuple[dict, Vocab, dict, dict]:
    """``(params_dict, vocab, config, optimizer_arrays)``: everything --resume needs."""
    params, vocab, cfg, optimizer = _load(checkpoint_dir(run_dir, slot), want_optimizer=True)
    return params, vocab, cfg, optimizer or {}


def load_training_state(run_dir) -> tuple[dict, dict]:
    """``(config, optimizer_arrays)`` of ``run_dir/last``; config["train_state"] holds the rest."""
    _, _, cfg, optimizer = load_checkpoint(run_dir, "last")
    return cfg, optimizer
