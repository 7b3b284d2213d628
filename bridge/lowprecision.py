"""Reduced-precision copies of a model, for bf16 inference on CPUs that have it natively.

Autocast keeps the weights in fp32 and, on every call, casts them and every activation
around the layers it runs in fp32 (the norms). On two Zen 4 cores that bookkeeping costs a
sixth of one 7.8 s htdemucs segment. A copy whose weights are already bf16 runs each layer
in bf16 with no casts in between, while the model's own forward keeps its fp32 input, so
the STFT, the input normalisation and the inverse STFT stay fp32.

Attention in the copy is computed explicitly (`_attention`): for these shapes torch's bf16
attention on CPU multiplies by a transposed, non-contiguous K at half the speed of the other
product, and sends cross-attention through a flash kernel that runs at about 143 GFLOP/s; a
contiguous K lets every product run at the speed of the rest. That saves 6 % of a segment
(1.72 → 1.62 s) at the same SNR.

Small convolutions run as matrix products (`_pointwise_conv`, `_conv_by_taps`): oneDNN's
bf16 kernels handle layers with few channels badly (HTDemucs' residual branches compress 48
channels to 6, and their 1x1 layers expand 6 back to 96, over 512 frequency rows as a batch).
A 1x1 convolution is exactly a product by the weight matrix (the same numbers, bit for bit,
at 1.4x the speed over the model's shapes); a few-output convolution is one product by all its
taps stacked, whose shifted rows are then summed (1.4x). Whole segments, two at once on a
core each: 1.02x on two Zen 4 cores, 1.2-1.35x on a Xeon with AMX (1.17x four calls x four
threads), SNR against fp32 unchanged (bench/bench_conv_products.py).

Measured on the full-size htdemucs, one segment, side by side: fp32 2.9–3.3 s, autocast
1.8–2.0 s, this copy 1.6–1.7 s before the attention change; SNR against fp32 48.0 dB
(autocast 48.7 dB). The copy costs half the model's fp32 size in memory (84 MB for
htdemucs) and is made once.
"""

from __future__ import annotations

import copy
import threading
import types
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from demucs.htdemucs import HTDemucs

_copies: weakref.WeakKeyDictionary[torch.nn.Module, dict[torch.dtype, torch.nn.Module]] = (
    weakref.WeakKeyDictionary())
_lock = threading.Lock()


def has_weight_copy_path(model: torch.nn.Module) -> bool:
    """HTDemucs (v4) only: its layers are convolutions, norms and attention, all of which run
    in bf16 on CPU. Older models carry LSTMs; they keep autocast."""
    return isinstance(model, HTDemucs)


def reduced_precision_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The `dtype` copy of `model`, made on first use and kept while `model` lives.

    The original stays untouched (fp32 jobs share it)."""
    with _lock:
        per_dtype = _copies.setdefault(model, {})
        if dtype not in per_dtype:
            per_dtype[dtype] = _convert(model, dtype)
        return per_dtype[dtype]


def modules_that_run(model: torch.nn.Module) -> list[torch.nn.Module]:
    """`model` and, where bf16 jobs on CPU run one in its place, its bf16 copy (made now, so
    the engine reuses it): what a hook must watch to see every call of `model`."""
    return [model, reduced_precision_copy(model, torch.bfloat16)] if has_weight_copy_path(model) else [model]


def _convert(model: torch.nn.Module, dtype: torch.dtype, conv_products: bool = True) -> torch.nn.Module:
    """The copy; `conv_products=False` keeps torch's convolutions (bench/bench_conv_products.py)."""
    converted = copy.deepcopy(model).to(dtype).eval()
    cast = _cast_inputs_hook(dtype)
    for module in converted.modules():  # only this copy's modules get these forwards
        if isinstance(module, torch.nn.MultiheadAttention) and has_plain_layout(module):
            module.forward = types.MethodType(_attention, module)
        elif conv_products and is_pointwise(module):
            module.forward = types.MethodType(_pointwise_conv, module)
        elif conv_products and has_few_outputs(module):
            module.forward = types.MethodType(_conv_by_taps, module)
    for name, module in converted.named_modules():
        # Every layer that owns weights takes its input in the weights' dtype. The root is left
        # alone: its forward does the STFT and normalisation, which need fp32. Values that
        # fp32 buffers promote on the way (positional embeddings) are brought back at the
        # next layer.
        if name and any(True for _ in module.parameters(recurse=False)):
            module.register_forward_pre_hook(cast, with_kwargs=True)
    return converted


def _cast_inputs_hook(dtype: torch.dtype):
    def to_dtype(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
            return value.to(dtype)
        return value

    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return tuple(to_dtype(a) for a in args), {k: to_dtype(v) for k, v in kwargs.items()}

    return hook


def has_plain_layout(attention: torch.nn.MultiheadAttention) -> bool:
    """The layout `_attention` handles: batch first, one packed input projection with bias,
    no extra key/value biases, no dropout (HTDemucs' transformer layers)."""
    return (attention.batch_first and attention._qkv_same_embed_dim and attention.in_proj_bias is not None
            and attention.bias_k is None and not attention.add_zero_attn and attention.dropout == 0.0)


def _attention(self: torch.nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
               attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
               is_causal: bool = False) -> tuple[torch.Tensor, None]:
    """nn.MultiheadAttention.forward for `has_plain_layout` modules without masks, with K laid
    out contiguously for the score product. Never returns attention weights (HTDemucs asks
    for none)."""
    if key_padding_mask is not None or attn_mask is not None or is_causal:
        return torch.nn.MultiheadAttention.forward(self, query, key, value, key_padding_mask, False,
                                                   attn_mask, average_attn_weights, is_causal)
    batch, q_len, width = query.shape
    heads = self.num_heads
    head_width = width // heads
    weight, bias = self.in_proj_weight, self.in_proj_bias
    if query is key and key is value:
        q, k, v = F.linear(query, weight, bias).chunk(3, dim=-1)
    else:
        q = F.linear(query, weight[:width], bias[:width])
        k = F.linear(key, weight[width:2 * width], bias[width:2 * width])
        v = F.linear(value, weight[2 * width:], bias[2 * width:])
    k_len = k.shape[1]
    q = (q * head_width ** -0.5).reshape(batch, q_len, heads, head_width).transpose(1, 2)
    k_t = k.reshape(batch, k_len, heads, head_width).permute(0, 2, 3, 1).contiguous()
    v = v.reshape(batch, k_len, heads, head_width).transpose(1, 2)
    weights = torch.softmax(torch.matmul(q, k_t), dim=-1)
    out = torch.matmul(weights, v).transpose(1, 2).reshape(batch, q_len, width)
    return F.linear(out, self.out_proj.weight, self.out_proj.bias), None


def _is_plain_conv(conv: torch.nn.Module) -> bool:
    return (isinstance(conv, (torch.nn.Conv1d, torch.nn.Conv2d)) and conv.groups == 1
            and conv.padding_mode == "zeros" and all(s == 1 for s in conv.stride))


def is_pointwise(conv: torch.nn.Module) -> bool:
    """A 1x1 convolution with no stride, padding or groups: a product by its weight matrix."""
    return (_is_plain_conv(conv) and all(k == 1 for k in conv.kernel_size)  # type: ignore[union-attr]
            and all(p == 0 for p in conv.padding))  # type: ignore[union-attr]


# Above this many outputs oneDNN's own kernel is as fast as the taps product (measured on
# htdemucs' residual branches: 6, 12 and 24 outputs gain 1.3-1.5x, 48 none).
_FEW_OUTPUTS = 32


def has_few_outputs(conv: torch.nn.Module) -> bool:
    """A 1-D, odd-kernel, 'same'-padded convolution with few outputs (HTDemucs' residual
    branches), which `_conv_by_taps` computes."""
    if not (isinstance(conv, torch.nn.Conv1d) and _is_plain_conv(conv)):
        return False
    kernel, dilation, padding = conv.kernel_size[0], conv.dilation[0], conv.padding
    return (kernel % 2 == 1 and kernel > 1 and conv.out_channels <= _FEW_OUTPUTS
            and isinstance(padding, tuple) and padding[0] == dilation * (kernel // 2))


def _product(weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """weight [O, I] times x [N, I, L], plus bias per output: [N, O, L]."""
    if x.shape[0] == 1:
        out = torch.mm(weight, x[0]) if bias is None else torch.addmm(bias[:, None], weight, x[0])
        return out.unsqueeze(0)
    batched = weight.expand(x.shape[0], *weight.shape)  # a view: no copy of the weight per item
    return torch.bmm(batched, x) if bias is None else torch.baddbmm(bias[None, :, None], batched, x)


def _pointwise_conv(self: torch.nn.Conv1d | torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The module's forward for `is_pointwise` convolutions."""
    out = _product(self.weight.flatten(1), x.reshape(x.shape[0], x.shape[1], -1), self.bias)
    return out.view(x.shape[0], self.out_channels, *x.shape[2:])


def _conv_by_taps(self: torch.nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """The module's forward for `has_few_outputs` convolutions: one product gives every tap's
    contribution at every position; output t sums tap j's row at t + (j - centre) * dilation,
    and positions past either end contribute nothing (the zero padding)."""
    outputs, kernel, dilation = self.out_channels, self.kernel_size[0], self.dilation[0]
    taps = _product(self.weight.permute(2, 0, 1).reshape(kernel * outputs, -1), x, None)
    centre = kernel // 2
    out = taps[:, centre * outputs:(centre + 1) * outputs]
    out = out + self.bias[None, :, None] if self.bias is not None else out.clone()
    length = x.shape[-1]
    for tap in range(kernel):
        shift = (tap - centre) * dilation
        if tap == centre or abs(shift) >= length:
            continue
        rows = taps[:, tap * outputs:(tap + 1) * outputs]
        if shift > 0:
            out[..., :length - shift] += rows[..., shift:]
        else:
            out[..., -shift:] += rows[..., :length + shift]
    return out
