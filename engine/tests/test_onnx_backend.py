"""The onnx wheel's backend test data: suites we did not write."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx_backend import cases, run_case, summary, sweep

# Cases that must pass (not merely "not fail"): the op families real models use.
CURATED = [
    "pytorch-converted/test_AvgPool1d",
    "pytorch-converted/test_AvgPool2d",
    "pytorch-converted/test_AvgPool2d_stride",
    "pytorch-converted/test_BatchNorm1d_3d_input_eval",
    "pytorch-converted/test_BatchNorm2d_eval",
    "pytorch-converted/test_BatchNorm2d_momentum_eval",
    "pytorch-converted/test_Conv1d",
    "pytorch-converted/test_Conv1d_dilated",
    "pytorch-converted/test_Conv1d_groups",
    "pytorch-converted/test_Conv1d_pad1",
    "pytorch-converted/test_Conv1d_stride",
    "pytorch-converted/test_Conv2d",
    "pytorch-converted/test_Conv2d_depthwise",
    "pytorch-converted/test_Conv2d_depthwise_padded",
    "pytorch-converted/test_Conv2d_depthwise_strided",
    "pytorch-converted/test_Conv2d_depthwise_with_multiplier",
    "pytorch-converted/test_Conv2d_dilated",
    "pytorch-converted/test_Conv2d_groups",
    "pytorch-converted/test_Conv2d_groups_thnn",
    "pytorch-converted/test_Conv2d_no_bias",
    "pytorch-converted/test_Conv2d_padding",
    "pytorch-converted/test_Conv2d_strided",
    "pytorch-converted/test_ELU",
    "pytorch-converted/test_Embedding",
    "pytorch-converted/test_GLU",
    "pytorch-converted/test_GLU_dim",
    "pytorch-converted/test_LeakyReLU",
    "pytorch-converted/test_LeakyReLU_with_negval",
    "pytorch-converted/test_Linear",
    "pytorch-converted/test_Linear_no_bias",
    "pytorch-converted/test_LogSoftmax",
    "pytorch-converted/test_MaxPool1d",
    "pytorch-converted/test_MaxPool1d_stride",
    "pytorch-converted/test_MaxPool2d",
    "pytorch-converted/test_PReLU_2d",
    "pytorch-converted/test_PReLU_2d_multiparam",
    "pytorch-converted/test_PixelShuffle",
    "pytorch-converted/test_ReLU",
    "pytorch-converted/test_ReflectionPad2d",
    "pytorch-converted/test_ReplicationPad2d",
    "pytorch-converted/test_SELU",
    "pytorch-converted/test_Sigmoid",
    "pytorch-converted/test_Softmax",
    "pytorch-converted/test_Softmin",
    "pytorch-converted/test_Softplus",
    "pytorch-converted/test_Softsign",
    "pytorch-converted/test_Tanh",
    "pytorch-converted/test_ZeroPad2d",
    "pytorch-converted/test_log_softmax_dim3",
    "pytorch-converted/test_log_softmax_lastdim",
    "pytorch-converted/test_softmax_functional_dim3",
    "pytorch-converted/test_softmax_lastdim",
    "pytorch-operator/test_operator_addmm",
    "pytorch-operator/test_operator_basic",
    "pytorch-operator/test_operator_chunk",
    "pytorch-operator/test_operator_clip",
    "pytorch-operator/test_operator_concat2",
    "pytorch-operator/test_operator_conv",
    "pytorch-operator/test_operator_exp",
    "pytorch-operator/test_operator_flatten",
    "pytorch-operator/test_operator_index",
    "pytorch-operator/test_operator_max",
    "pytorch-operator/test_operator_maxpool",
    "pytorch-operator/test_operator_min",
    "pytorch-operator/test_operator_mm",
    "pytorch-operator/test_operator_pad",
    "pytorch-operator/test_operator_params",
    "pytorch-operator/test_operator_permute2",
    "pytorch-operator/test_operator_pow",
    "pytorch-operator/test_operator_reduced_mean",
    "pytorch-operator/test_operator_reduced_sum",
    "pytorch-operator/test_operator_repeat",
    "pytorch-operator/test_operator_selu",
    "pytorch-operator/test_operator_sqrt",
    "pytorch-operator/test_operator_symbolic_override",
    "pytorch-operator/test_operator_view",
    "light/light_resnet50",
    "light/light_densenet121",
    "light/light_shufflenet",
    "light/light_squeezenet",
    "light/light_vgg19",
    "light/light_inception_v2",
]


def test_every_case_of_a_supported_op_passes() -> None:
    results = sweep()
    s = summary(results)
    passed = sum(c.get("pass", 0) for c in s["suites"].values())
    print("\nonnx backend data:", s["suites"], "unsupported:", s["unsupported_ops"])
    assert not s["failures"], s["failures"]
    assert passed >= 100


@pytest.mark.parametrize("case_id", CURATED)
def test_curated_case_passes(case_id: str, tmp_path: Path) -> None:
    suite, name = case_id.split("/")
    (case,) = [c for c in cases((suite,)) if c.name == name]
    r = run_case(case, tmp_path)
    assert r.status == "pass", r.detail
