"""benchmarks.profile_step puts each profiled op in the group the README's breakdown names."""

from __future__ import annotations

import pytest

from benchmarks.profile_step import group_of


@pytest.mark.parametrize("op, group", [
    ("mkldnn::_linear_pointwise", "matmuls"),
    ("aten::bmm", "matmuls"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::_log_softmax_backward_data", "loss"),
    ("_LinearCrossEntropy", "loss"),
    ("aten::native_layer_norm_backward", "norms"),
    ("aten::gelu_backward", "activations"),
    ("aten::_to_copy", "casts"),
    ("aten::_fused_adamw_", "optimizer"),
    ("aten::linalg_vector_norm", "optimizer"),
    ("aten::empty_strided", "allocator"),
    ("aten::view", "other"),
])
def test_ops_fall_in_their_groups(op, group):
    assert group_of(op) == group


def test_a_softmax_over_the_vocabulary_is_the_loss_and_one_over_keys_is_attention():
    # the chunked loss's in-place softmax is aten::_softmax too: its last dim, the vocabulary, tells it apart
    assert group_of("aten::_softmax", [[512, 16384], [], [], [512, 16384]], vocab_size=16384) == "loss"
    assert group_of("aten::_softmax", [[8, 4, 256, 256], [], []], vocab_size=16384) == "attention"
