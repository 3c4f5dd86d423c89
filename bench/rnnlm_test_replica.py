"""Where elman's perplexity of an imported RNNLM model parts from ``rnnlm -test``.

RNNLM's ``-test`` (``testNet``/``computeNet`` of rnnlmlib.cpp, the Cantab
0.4b float fork) recomputed in NumPy from the model file, word by word, in
float32 as the C computes it, two ways: with the fork's approximate exp
(fastexp.h's ``fasterexp``, in the sigmoid and both softmaxes) or with the
exact one; from the state saved in the file (what ``-test`` does without
``-independent``, and elman's import from its h_start) or from RNNLM's
reset state 1.0 (elman's h0 = 0). Each is held, word by word, against the
binary's ``-debug 2`` probabilities and elman's ``score --carry
--per-token`` of the imported model: which replica each matches, and how
far, says what the difference is.

    python bench/rnnlm_test_replica.py MODEL TEXT BINARY_DEBUG ELMAN_PER_TOKEN

BINARY_DEBUG: ``rnnlm -rnnlm MODEL -test TEXT -debug 2``'s output;
ELMAN_PER_TOKEN: ``elman score --model IMPORTED --data TEXT --carry --per-token FILE``'s FILE.
Direct connections go through ``elman.core.rnnlm_direct`` (itself held to a
transcription of the C's loops by the tests).
"""
from __future__ import annotations

import sys

import numpy as np

from elman.core import rnnlm_direct as rd
from elman.interop import rnnlm_file


def fasterexp(p):
    """fastexp.h: fasterpow2(1.442695040f * p), float32 throughout."""
    p = np.float32(1.442695040) * np.asarray(p, np.float32)
    clipp = np.maximum(p, np.float32(-126.0))
    v = (np.float32(1 << 23) * (clipp + np.float32(126.94269504))).astype(np.uint32)
    return v.view(np.float32)


def direct_terms(m, ids):
    """(class terms (T,K), word terms of each target's class (T, list)) of RNNLM's hashing;
    ids (T+1,): RNNLM indices, ids[0] = the first history word (0), -1 out of vocabulary."""
    T, N, M = len(ids) - 1, m.order, m.direct.size
    sentinel = len(m.words) + 1
    ctx = np.where(ids < 0, sentinel, ids)
    ctx = np.concatenate([np.full(max(N - 2, 0), -1), ctx[:-1]])[None]      # history before x(0): RNNLM's 0
    S, alive = rd.sums(ctx, N), rd.live(ctx, N, sentinel)
    bounds = np.searchsorted(m.classes, np.arange(m.K + 1))
    Zc = rd.class_forward(S, m.direct.astype(np.float64), m.K, alive)[0]
    words = {}
    for k in range(m.K):
        O, lim = rd.word_offsets(S, M, k, alive)
        words[k] = (O, lim, bounds[k], bounds[k + 1])
    return Zc, words


def replica(m, text_ids, fast_exp: bool, saved_state: bool):
    """log10 P of each predicted word (NaN for an OOV target, which -test skips)."""
    exp = fasterexp if fast_exp else (lambda x: np.exp(np.asarray(x, np.float32)))
    V, Dh = len(m.words), m.syn0.shape[0]
    W, R, S1 = m.syn0[:, :V], m.syn0[:, V:], m.syn1
    ids = np.concatenate([[0], text_ids])                                     # last_word starts at 0 (</s>)
    Zc, words = direct_terms(m, ids) if m.direct.size else (None, None)
    s = (m.hidden if saved_state else np.ones(Dh)).astype(np.float32)
    out = np.full(len(text_ids), np.nan)
    for t in range(len(text_ids)):
        last, word = ids[t], ids[t + 1]
        a = R @ s + (W[:, last] if last >= 0 else 0)
        s = (1 / (1 + exp(-np.clip(a, -50, 50)))).astype(np.float32)
        if word < 0:
            continue
        zc = S1[V:] @ s + (Zc[t] if Zc is not None else 0)
        k = m.classes[word]
        lo, hi = np.searchsorted(m.classes, [k, k + 1])
        zw = (S1[lo:hi] @ s).astype(np.float64)
        if words is not None:
            O, lim, _, _ = words[k]
            j = np.arange(hi - lo)
            for f in range(m.order):
                on = j < lim[t, f]
                zw[on] += m.direct[O[t, f] + j[on]]
        pc = _softmax(np.float32(zc), exp)[k]
        pw = _softmax(np.float32(zw), exp)[word - lo]
        out[t] = np.log10(np.float32(pc) * np.float32(pw))
    return out


def _softmax(z, exp):
    """The C's 'safe' softmax: float exps, a double sum, float results."""
    e = exp(z - z.max()).astype(np.float64)
    return (e / e.sum()).astype(np.float32)


def binary_probs(path):
    rows = [ln.rstrip("\n").split("\t") for ln in open(path)]
    rows = [r for r in rows if len(r) >= 3 and (r[0].isdigit() or r[0] == "-1")]
    return np.array([np.log10(float(r[1])) if r[0] != "-1" else np.nan for r in rows]), [r[0] for r in rows]


def main(model, text, debug, per_token):
    m = rnnlm_file.read(model)
    theirs, idx = binary_probs(debug)
    text_ids = np.array([int(i) for i in idx])
    ours = np.array([float(ln.split("\t")[1]) for ln in open(per_token)])
    known = ~np.isnan(theirs)
    n = known.sum()
    ppl = lambda lp: 10 ** (-lp[known].sum() / n)            # noqa: E731  -test's PPL net: OOV targets skipped
    print(f"{model}: {len(text_ids)} words, {len(text_ids) - n} out of vocabulary; PPL binary {ppl(theirs):.4f}, "
          f"elman {ppl(ours):.4f} ({100 * (ppl(ours) / ppl(theirs) - 1):+.3f}%)")
    for fast_exp in (True, False):
        for saved in (True, False):
            r = replica(m, text_ids, fast_exp, saved)
            name = f"replica, {'fasterexp' if fast_exp else 'exact exp'}, {'saved state' if saved else 'state 1.0'}"
            print(f"  {name:<40} PPL {ppl(r):.4f}   max |log10 diff| vs binary "
                  f"{np.abs(r - theirs)[known].max():.2e}, vs elman {np.abs(r - ours)[known].max():.2e}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
