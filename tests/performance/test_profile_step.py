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
