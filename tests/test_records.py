"""--per-token's compiled records against Python's own formatting."""
import numpy as np

from elman.fast.records import token_records


def python(tokens, values):
    return "".join("%s\t%.7f\n" % r for r in zip(tokens, np.asarray(values, np.float64).tolist()))


def test_random_log_probabilities_are_written_as_python_writes_them():
    rng = np.random.default_rng(0)
    values = np.concatenate([-rng.exponential(3.0, 20000), -rng.exponential(1e-6, 2000),
                             rng.uniform(-4e8 + 1, 4e8 - 1, 2000), [0.0, -0.0, 1e-300, -5e-324]])
    tokens = [f"w{i}" for i in range(len(values))]
    assert token_records(tokens, values) == python(tokens, values)


def test_halves_and_their_neighbours_round_as_python_rounds_them():
    # k/2e7 + 1/(2e7): the decimal halves, as near as float64 gets, and the floats beside them
    k = np.arange(-200000, 200000, 7, dtype=np.float64)
    halves = (2 * k + 1) / 2e7
    exact = np.array([0.00390625, -0.00390625, 0.5 / 2**7, 3 / 2**8, 2.5e-7 * 4 / 4])   # halves float64 holds exactly
    values = np.concatenate([halves, np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf), exact,
                             (2 * k + 1) / 2e7 * 1000 + 0.5e-7])
    tokens = ["x"] * len(values)
    assert token_records(tokens, values) == python(tokens, values)


def test_tokens_of_any_script_and_what_the_loop_leaves_to_python():
    tokens = ["naïve", "日本語", "<eos>", "\t", " ", "a" * 300]
    values = [-1.25, -0.5e-7, -3.0, -1e-9, -2.5e-8, -7.123456789]
    assert token_records(tokens, values) == python(tokens, values)
    odd = [-np.inf, np.nan, -5e8]
    assert token_records(["a", "b", "c"], odd) == python(["a", "b", "c"], odd)
    assert token_records([], []) == ""
