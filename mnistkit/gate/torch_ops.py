"""The ATen operators a torch-family model file may call (TorchScript code, torch.export nodes, ExecuTorch
kernels): what image classifiers are made of, and nothing that reads or writes files, starts processes,
talks to a network, allocates by a size it is given (zeros, full, arange, expand, repeat: a memory bomb in
one call), or loops.

Derived from mnistkit's own exports (the MLP, the CNN, traced and scripted) and from the vision
classifiers users bring (LeNet, CIFAR-style nets, torchvision's ResNet and MobileNet families, scripted
modules with BatchNorm, Dropout and log_softmax); `tests/test_gate.py` proves every export passes.
"""

from __future__ import annotations

ATEN_OPS = frozenset("""
    linear addmm mm bmm matmul t _convolution convolution conv1d conv2d conv3d conv_transpose1d conv_transpose2d
    relu relu_ relu6 hardtanh hardtanh_ hardswish hardswish_ hardsigmoid hardsigmoid_ silu silu_ gelu sigmoid
    sigmoid_ tanh tanh_ leaky_relu leaky_relu_ elu elu_ selu celu softplus prelu _prelu_kernel mish glu
    max_pool1d max_pool2d max_pool2d_with_indices avg_pool1d avg_pool2d adaptive_avg_pool1d adaptive_avg_pool2d
    _adaptive_avg_pool2d adaptive_max_pool2d
    batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training native_batch_norm
    _batch_norm_impl_index layer_norm native_layer_norm group_norm native_group_norm instance_norm
    dropout dropout_ feature_dropout alpha_dropout native_dropout
    softmax _softmax log_softmax _log_softmax
    flatten view reshape _reshape_alias _unsafe_view view_copy permute permute_copy transpose transpose_copy
    squeeze squeeze_copy unsqueeze unsqueeze_copy contiguous clone detach alias alias_copy to _to_copy
    type_as select slice slice_copy narrow chunk split split_with_sizes unbind cat stack t_copy
    add add_ sub sub_ rsub mul mul_ div div_ neg abs sqrt rsqrt exp log log1p pow reciprocal sign floor ceil
    round clamp clamp_ clamp_min clamp_max minimum maximum where
    mean sum amax amin max min argmax argmin std var logsumexp norm
    eq ne lt le gt ge logical_not logical_and logical_or
    constant_pad_nd pad reflection_pad2d replication_pad2d upsample_nearest2d upsample_bilinear2d
    quantize_per_tensor dequantize
    size sym_size sym_numel sym_stride dim numel
""".split())

# What TorchScript's printer writes as `torch.<name>(...)` beyond ATen's compute operators: the builtins of
# the scripted language (comparisons of Python values, list and string helpers for error messages).
TORCHSCRIPT_BUILTINS = frozenset("""
    __is__ __isnot__ __not__ __and__ __or__ __contains__ __getitem__ __range_length __derive_index
    len format warn list append floordiv remainder mul add sub div neg eq ne lt le gt ge
    Int Float Bool ScalarImplicit item dim size numel is_floating_point str device dtype __interpolate
""".split())

# TorchScript's `ops.prim.*` and `ops.aten.*` forms of the same.
TORCHSCRIPT_PRIM = frozenset("""
    RaiseException unchecked_unwrap_optional TupleIndex NumToTensor ImplicitTensorToNum dtype device layout
    is_cuda requires_grad min max abs data shape
""".split())

# ExecuTorch's own kernels (memory planning helpers, dim-order copies, quantize/dequantize); ATen kernels
# are ATEN_OPS under their `.out` overloads.
EXECUTORCH_OPS = frozenset({
    "executorch_prim::et_view", "executorch_prim::et_copy_index", "executorch_prim::add", "executorch_prim::sub",
    "executorch_prim::mul", "executorch_prim::floordiv", "executorch_prim::truediv", "executorch_prim::eq",
    "executorch_prim::gt", "executorch_prim::lt", "executorch_prim::ge", "executorch_prim::le",
    "executorch_prim::neg", "executorch_prim::mod", "executorch_prim::sym_float",
    "dim_order_ops::_to_dim_order_copy", "dim_order_ops::_empty_dim_order",
    "quantized_decomposed::quantize_per_tensor", "quantized_decomposed::dequantize_per_tensor",
    "quantized_decomposed::quantize_per_channel", "quantized_decomposed::dequantize_per_channel",
    "quantized_decomposed::choose_qparams",
})
EXECUTORCH_DELEGATES = frozenset({"XnnpackBackend"})  # the delegate the executorch wheel runs on a CPU

CONTROL_FLOW = frozenset({"while_loop", "cond", "scan", "map", "map_impl", "while", "Loop", "Scan", "If"})
