"""The shared checks (``layer_checks``) for every registered output layer."""
import pytest

from elman.model.outputs import LAYERS

import layer_checks as checks


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("direct", [False, True])
def test_fast_matches_reference(name, direct):
    checks.check_fast_matches_reference(name, direct)


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("direct", [False, True])
def test_reference_gradients(name, direct):
    checks.check_reference_gradients(name, direct)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_log_probs(name):
    checks.check_log_probs(name)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_bptt_gradients(name):
    checks.check_bptt_gradients(name)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_onnx_nodes(name):
    checks.check_onnx_nodes(name)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_onnx_score_nodes(name):
    checks.check_onnx_score_nodes(name)
