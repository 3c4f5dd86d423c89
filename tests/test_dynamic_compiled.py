"""The compiled dynamic evaluation (``fast.dynamic``) against the step-by-step
rule through ``bptt`` (``inference.dynamic``'s reference loop): the same
losses, and the same weights after the last step, to rounding."""
import numpy as np
import pytest

from elman import Params
from elman.inference import dynamic
from elman.fast.dynamic import CompiledSegments

V, EOS = 17, 0


def model(dtype="float64", direct=90, classes=4, seed=3):
    counts = np.arange(3 * V, 2 * V, -1)
    p = Params.init(V, 5, 7, seed=seed, dtype=dtype, classes=classes, counts=counts, direct=direct, direct_order=3)
    rng = np.random.default_rng(seed + 1)
    for a in p.as_dict().values():
        if a.dtype.kind == "f":
            a += rng.normal(scale=0.5, size=a.shape).astype(a.dtype)
    return p


def scales(p, seed=5):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(0.5, 2.0, v.shape).astype(v.dtype) for k, v in p.as_dict().items()
            if v.dtype.kind == "f" and k != "D"}


def adapted(p, ids, T, lr, direct_lr, decay, scale, compiled):
    """The losses and the weights after the last step (every lazy one caught up)."""
    q = p.copy()
    a = dynamic.Adapter(q.as_dict(), lr, direct_lr, decay, scale, q.class_bounds)
    x = np.r_[EOS, ids[:-1]]
    h = np.zeros(q.Dh, q.dtype)
    if compiled:
        run = CompiledSegments(q, a)
        half = (len(ids) // (2 * T)) * T          # two calls: the state and the words before carried
        out = np.r_[run(x[:half], ids[:half], np.r_[0:half:T, half], h),
                    run(x[half:], ids[half:], np.r_[0:len(ids) - half:T, len(ids) - half], h, x[half - 1:half])]
    else:
        out = dynamic.adapted_stream_losses(q, ids, EOS, lr, T, direct_lr, decay, scale, compiled=False)
        q = None                                  # adapted_stream_losses steps a copy of its own
    if q is not None:
        a.finish()
    return out, q


@pytest.mark.parametrize("direct", [0, 90])
@pytest.mark.parametrize("T", [1, 4, 7])
def test_compiled_stream_is_the_reference_loop(direct, T):
    p = model(direct=direct)
    ids = np.random.default_rng(T).integers(0, V, 60)
    scale = scales(p)
    got = dynamic.adapted_stream_losses(p, ids, EOS, 0.3, T, 0.2, 0.1, scale, compiled=True)
    ref = dynamic.adapted_stream_losses(p, ids, EOS, 0.3, T, 0.2, 0.1, scale, compiled=False)
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-12)
    assert np.abs(got - dynamic.adapted_stream_losses(p, ids, EOS, 1e-9, T, compiled=True)).max() > 1e-3


@pytest.mark.parametrize("decay,scaled", [(0.0, False), (0.1, True)])
def test_compiled_steps_leave_the_reference_weights(decay, scaled):
    """Every weight after 15 segments, the lazy ones caught up, against the
    reference loop's Adapter stepping bptt's sparse gradients."""
    p = model()
    scale = scales(p) if scaled else None
    rng = np.random.default_rng(7)
    ids = rng.integers(1, 6, 60)                  # few words: most rows and classes sit out segments
    got, q = adapted(p, ids, 4, 0.3, 0.2, decay, scale, compiled=True)
    ref_p = p.copy()
    a = dynamic.Adapter(ref_p.as_dict(), 0.3, 0.2, decay, scale, ref_p.class_bounds)
    from elman.model import bptt
    x, h, hist = np.r_[EOS, ids[:-1]], np.zeros((1, p.Dh)), None
    ref = []
    for s in range(0, len(ids), 4):
        xs, ys = x[None, s:s + 4], ids[None, s:s + 4]
        a.ready(xs, dynamic._classes(ref_p, ys))
        losses, grads, h = bptt(ref_p, xs, ys, h, sparse=True, history=hist, per_position=True)
        ref.append(losses[0])
        a.step(grads)
        hist = xs[:, -1:]
    a.finish()
    np.testing.assert_allclose(got, np.concatenate(ref), rtol=1e-11)
    for k, v in ref_p.as_dict().items():
        np.testing.assert_allclose(q.as_dict()[k], v, rtol=1e-10, atol=1e-12, err_msg=k)
    moved = np.abs(q.D - p.D).max(), np.abs(q.H - p.H).max(), np.abs(q.U - p.U).max()
    assert min(moved) > 1e-3


def test_compiled_float32_is_the_reference_to_rounding():
    p = model("float32")
    ids = np.random.default_rng(3).integers(0, V, 80)
    scale = scales(p)
    got = dynamic.adapted_stream_losses(p, ids, EOS, 0.3, 5, 0.2, 0.05, scale, compiled=True)
    ref = dynamic.adapted_stream_losses(p, ids, EOS, 0.3, 5, 0.2, 0.05, scale, compiled=False)
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)


def test_compiled_lines_are_the_reference_lines():
    p = model()
    rng = np.random.default_rng(4)
    lines = [np.r_[rng.integers(1, V, n), EOS] for n in (5, 1, 9, 3)]
    got = dynamic.line_losses(p, lines, 0.3, 0.2, 0.1, scales(p), compiled=True)
    ref = dynamic.line_losses(p, lines, 0.3, 0.2, 0.1, scales(p), compiled=False)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-11)


def test_the_compiled_path_is_the_default_for_a_class_model_only():
    assert dynamic.compiled_runs(model())
    assert not dynamic.compiled_runs(model(classes=0))
    with pytest.raises(ValueError):
        CompiledSegments(model(classes=0), None)
