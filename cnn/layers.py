"""Layers of the NumPy CNN library.

Every layer follows one protocol (see :class:`Layer`): ``forward(x)``, ``backward(grad_out) -> grad_in``,
``params`` and ``grads`` dicts with the same keys (torch names: ``weight``, ``bias``), ``buffers`` for
non-trained state, and a ``training`` flag set by ``train()`` / ``eval()``. Layout is NCHW and parameter
shapes are those of ``torch.nn``.

Initialisation (the PyTorch twin mirrors it): convolution and dense weights are He-normal,
``N(0, 2 / fan_in)`` with ``fan_in = in_channels * kh * kw`` or ``in_features``; biases are zeros;
batch-norm weight ones, bias zeros, running mean zeros, running variance ones.

dtype: every layer with parameters computes in its ``dtype`` (float32 by default; float64 for gradient
checks) and casts its input to it; parameter-free layers keep the dtype of their input. The arithmetic
behind the layers (im2col, pooling windows, batch statistics, threads) lives in :mod:`cnn.kernels`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from cnn import kernels
from cnn.errors import CNNError
from cnn.kernels import IntPair, pair


class Layer:
    """Base class of every layer.

    Attributes:
        params:   name -> trainable ndarray (``weight``, ``bias``, ...), updated in place by optimizers.
        grads:    name -> ndarray of the same shape as ``params[name]``. ``backward`` *overwrites* these
                  arrays in place (``grads[k][...] = ...``), never rebinds them, so the ``(param, grad)``
                  pairs an optimizer holds stay valid for the whole training.
        buffers:  name -> non-trained state saved with the model (BatchNorm's running statistics).
        training: True in training mode (dropout active, batch statistics), False in eval mode.
    """

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.training: bool = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def train(self, mode: bool = True) -> Layer:
        self.training = mode
        return self

    def eval(self) -> Layer:
        return self.train(False)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one sample's output (no batch axis) for one sample's ``input_shape``."""
        return tuple(input_shape)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


# ------------------------------------------------------------------------------------------- helpers


def _as_float_dtype(dtype: DTypeLike, name: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise CNNError(f"{name}: dtype must be a floating type, got {dt}")
    return dt


def _check_ndim(layer: Layer, x: np.ndarray, ndims: tuple[int, ...], what: str) -> None:
    if x.ndim not in ndims:
        raise CNNError(f"{type(layer).__name__} expects {what}, got an array of shape {x.shape}")


def _check_channels(layer: Layer, x: np.ndarray, expected: int, name: str) -> None:
    if x.shape[1] != expected:
        raise CNNError(
            f"{type(layer).__name__}({name}={expected}) got {x.shape[1]} channels (input shape {x.shape})"
        )


def he_normal(shape: tuple[int, ...], fan_in: int, dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """He (Kaiming) normal initialisation: ``N(0, 2 / fan_in)``, suited to ReLU networks."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


# -------------------------------------------------------------------------------------------- layers


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as ``torch.nn.Conv2d``).

    ``y[n, o, oh, ow] = bias[o] + sum_{c, i, j} weight[o, c, i, j] * xpad[n, c, sh*oh + i, sw*ow + j]``

    Shapes: x (N, C_in, H, W) -> y (N, C_out, OH, OW), ``OH = floor((H + 2*ph - kh) / sh) + 1``.
    Parameters: ``weight`` (C_out, C_in, kh, kw) drawn He-normal, ``N(0, 2 / (C_in*kh*kw))``;
    ``bias`` (C_out,) zeros (absent when ``bias=False``).
    Reference: :func:`cnn.kernels.reference.conv2d`, :func:`cnn.kernels.reference.conv2d_backward`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise CNNError(f"Conv2D channels must be >= 1, got in={in_channels}, out={out_channels}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "Conv2D kernel_size")
        self.stride = pair(stride, "Conv2D stride")
        self.padding = pair(padding, "Conv2D padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise CNNError(
                f"Conv2D needs kernel_size >= 1, stride >= 1, padding >= 0; got "
                f"{self.kernel_size}, {self.stride}, {self.padding}"
            )
        self.dtype = _as_float_dtype(dtype, "Conv2D")
        rng = rng if rng is not None else np.random.default_rng()
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        self.params["weight"] = he_normal(
            (self.out_channels, self.in_channels, kh, kw), fan_in, self.dtype, rng
        )
        if bias:
            self.params["bias"] = np.zeros(self.out_channels, dtype=self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._ws = kernels.Workspace()  # im2col columns, kept from forward for backward
        # False: backward computes only the parameter gradients and returns None (for a first layer,
        # whose input gradient nothing uses; as torch skips it for inputs without requires_grad).
        self.needs_input_grad = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        _check_ndim(self, x, (4,), "(N, C, H, W)")
        _check_channels(self, x, self.in_channels, "in_channels")
        self.output_shape(x.shape[1:])
        return kernels.conv2d_forward(
            x, self.params["weight"], self.params.get("bias"), self.stride, self.padding, self._ws
        )

    def forward_inference(
        self, x: np.ndarray, bn: _BatchNorm | None = None, relu: bool = False, pool: MaxPool2D | None = None
    ) -> np.ndarray:
        """Inference only (no backward may follow): ``self.forward(x)``, then optionally the eval-mode
        batch norm ``bn``, a ReLU and the max-pool ``pool`` (without padding), in one pass over a few
        samples at a time (what :meth:`cnn.model.Sequential.forward_inference` runs).

        The batch norm is folded into the convolution, ``y = (W * s) x + (b - running_mean) * s + beta``
        with ``s = gamma / sqrt(running_var + eps)`` (computed in float64 from the live parameters on
        every call, so nothing goes stale), which equals the layers run one by one up to float round-off."""
        x = np.asarray(x, dtype=self.dtype)
        _check_ndim(self, x, (4,), "(N, C, H, W)")
        _check_channels(self, x, self.in_channels, "in_channels")
        shape = self.output_shape(x.shape[1:])
        weight, bias = self.params["weight"], self.params.get("bias")
        if bn is not None:
            bn.output_shape(shape)
            scale = bn.params["weight"] / np.sqrt(bn.buffers["running_var"].astype(np.float64) + bn.eps)
            shift = bn.params["bias"] - bn.buffers["running_mean"] * scale
            if bias is not None:
                shift = shift + bias * scale
            weight = (weight * scale[:, None, None, None]).astype(self.dtype)
            bias = shift.astype(self.dtype)
        window = None
        if pool is not None:
            pool.output_shape(shape)
            window = (pool.kernel_size, pool.stride)
        return kernels.conv2d_forward_eval(
            x, weight, bias, self.stride, self.padding, self._ws, relu=relu, pool=window
        )

    # None when needs_input_grad is off (the network's first layer): the one exception to Layer.backward.
    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:  # type: ignore[override]
        grad_out = np.asarray(grad_out, dtype=self.dtype)
        return kernels.conv2d_backward(
            grad_out,
            self.params["weight"],
            self.stride,
            self.padding,
            self._ws,
            self.grads["weight"],
            self.grads.get("bias"),
            input_grad=self.needs_input_grad,
        )

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = input_shape
        if c != self.in_channels:
            raise CNNError(f"Conv2D(in_channels={self.in_channels}) got input shape {tuple(input_shape)}")
        oh, ow = (
            kernels.conv_output_size(s, k, st, p)
            for s, k, st, p in zip((h, w), self.kernel_size, self.stride, self.padding)
        )
        if oh < 1 or ow < 1:
            raise CNNError(
                f"Conv2D kernel {self.kernel_size} with padding {self.padding} does not fit input "
                f"{tuple(input_shape)}"
            )
        return (self.out_channels, oh, ow)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={'bias' in self.params}"
        )


class _Pool2D(Layer):
    """Shared argument handling of the pooling layers (torch semantics: stride defaults to kernel)."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, f"{name} kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, f"{name} stride")
        self.padding = pair(padding, f"{name} padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise CNNError(
                f"{name} needs kernel_size >= 1, stride >= 1, padding >= 0; got "
                f"{self.kernel_size}, {self.stride}, {self.padding}"
            )
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise CNNError(
                f"{name} padding {self.padding} must be at most half the kernel size {self.kernel_size}"
            )
        self._cache: dict[str, Any] = {}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = input_shape
        oh, ow = (
            kernels.conv_output_size(s, k, st, p)
            for s, k, st, p in zip((h, w), self.kernel_size, self.stride, self.padding)
        )
        if oh < 1 or ow < 1:
            raise CNNError(
                f"{type(self).__name__} kernel {self.kernel_size} does not fit input {tuple(input_shape)}"
            )
        return (c, oh, ow)

    def _check_input(self, x: np.ndarray) -> None:
        _check_ndim(self, x, (4,), "(N, C, H, W)")
        self.output_shape(x.shape[1:])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2D(_Pool2D):
    """Max pooling, as ``torch.nn.MaxPool2d`` (padding with -inf, floor output size).

    ``y[n, c, oh, ow] = max_{i < kh, j < kw} xpad[n, c, sh*oh + i, sw*ow + j]``; the gradient flows to
    the first maximal element of each window (row-major), as in torch.
    Shapes: (N, C, H, W) -> (N, C, OH, OW).
    Reference: :func:`cnn.kernels.reference.maxpool2d`.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        return kernels.maxpool2d_forward(x, self.kernel_size, self.stride, self.padding, self._cache)

    def forward_dropout(self, x: np.ndarray, dropout: Dropout2D) -> np.ndarray:
        """``dropout.forward(self.forward(x))`` in one pass: the pooled channel blocks are scaled by the
        dropout's mask (drawn by ``dropout`` from its own ``rng``, as its forward would) while in cache
        (what :class:`cnn.model.Sequential` runs for a max-pool followed by a ``Dropout2D``). The next
        :meth:`backward` then takes the gradient of the dropout's output."""
        self._check_input(x)
        # The mask depends only on the output's shape and dtype: a broadcast view of one zero carries them.
        pooled = np.broadcast_to(np.zeros((), x.dtype), (x.shape[0], *self.output_shape(x.shape[1:])))
        mask = dropout.draw_mask(pooled)
        return kernels.maxpool2d_forward(
            x, self.kernel_size, self.stride, self.padding, self._cache, scale=mask
        )

    def backward(self, grad_out: np.ndarray, relu_before: bool = False) -> np.ndarray:
        """The input gradient. ``relu_before=True``: this pool's input was the output of a ReLU (or of a
        batch norm with a fused ReLU), and the gradient is taken on through it: what the ReLU's backward
        would give after this one, computed on the pooled grid (:func:`cnn.kernels.maxpool2d_backward`)."""
        return kernels.maxpool2d_backward(
            grad_out, self.kernel_size, self.stride, self.padding, self._cache, relu_before=relu_before
        )


class AvgPool2D(_Pool2D):
    """Average pooling, as ``torch.nn.AvgPool2d`` with its defaults (zero padding counted in the mean).

    ``y[n, c, oh, ow] = (1 / (kh*kw)) * sum_{i, j} xpad[n, c, sh*oh + i, sw*ow + j]``.
    Shapes: (N, C, H, W) -> (N, C, OH, OW).
    Reference: :func:`cnn.kernels.reference.avgpool2d`.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        self._cache["x_shape"] = x.shape
        return kernels.avgpool2d_forward(x, self.kernel_size, self.stride, self.padding)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return kernels.avgpool2d_backward(
            grad_out, self._cache["x_shape"], self.kernel_size, self.stride, self.padding
        )


class _BatchNorm(Layer):
    """Batch normalisation over every axis but the channel axis 1 (torch semantics).

    Training: ``y = weight * (x - mu_B) / sqrt(var_B + eps) + bias`` with the batch mean ``mu_B`` and
    the *biased* batch variance ``var_B``; the running statistics are updated as
    ``running = (1 - momentum) * running + momentum * batch_stat`` using the *unbiased* variance
    ``var_B * m / (m - 1)`` (m = values per channel). Eval: the running statistics replace the batch ones.
    Parameters ``weight`` (ones) and ``bias`` (zeros), shape (C,); buffers ``running_mean`` (zeros),
    ``running_var`` (ones), ``num_batches_tracked`` (int64 scalar), as in torch's ``state_dict``.
    Reference: :func:`cnn.kernels.reference.batchnorm_train`, :func:`cnn.kernels.reference.batchnorm_eval`.
    """

    _input_ndim: int = 0
    _input_desc: str = ""

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, dtype: DTypeLike = np.float32
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if num_features < 1:
            raise CNNError(f"{name} num_features must be >= 1, got {num_features}")
        if eps <= 0 or not 0.0 <= momentum <= 1.0:
            raise CNNError(f"{name} needs eps > 0 and 0 <= momentum <= 1, got eps={eps}, momentum={momentum}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.dtype = _as_float_dtype(dtype, name)
        self.params = {
            "weight": np.ones(self.num_features, dtype=self.dtype),
            "bias": np.zeros(self.num_features, dtype=self.dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {
            "running_mean": np.zeros(self.num_features, dtype=self.dtype),
            "running_var": np.ones(self.num_features, dtype=self.dtype),
            "num_batches_tracked": np.zeros((), dtype=np.int64),
        }
        self._cache: dict[str, Any] = {}

    def _stat_shape(self) -> tuple[int, ...]:
        return (1, -1) if self._input_ndim == 2 else (1, -1, 1, 1)

    def forward(self, x: np.ndarray, overwrite_input: bool = False) -> np.ndarray:
        """The batch norm of ``x``. ``overwrite_input=True`` (training only): ``x`` is the caller's to give
        away, and the layer keeps its centred values in ``x``'s memory (what :class:`cnn.model.Sequential`
        passes when ``x`` is the fresh output of a convolution or dense layer before it)."""
        return self._forward(x, relu=False, overwrite_input=overwrite_input)

    def forward_relu(self, x: np.ndarray, overwrite_input: bool = False) -> np.ndarray:
        """``max(self.forward(x), 0)``: the batch norm and a following ReLU in one pass over the data
        (what :class:`cnn.model.Sequential` runs for a batch norm layer followed by a ``ReLU``). The next
        :meth:`backward` then takes the gradient of the ReLU's output."""
        return self._forward(x, relu=True, overwrite_input=overwrite_input)

    def _forward(self, x: np.ndarray, relu: bool, overwrite_input: bool = False) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        _check_ndim(self, x, (self._input_ndim,), self._input_desc)
        _check_channels(self, x, self.num_features, "num_features")
        gamma, beta = self.params["weight"], self.params["bias"]
        if not self.training:
            y = kernels.batchnorm_forward_eval(
                x,
                gamma,
                beta,
                self.buffers["running_mean"],
                self.buffers["running_var"],
                self.eps,
                self._cache,
            )
            if relu:  # eval: no statistics to fuse with; a plain ReLU after the affine map
                y = self._cache["relu_out"] = kernels.relu_forward(y)
            return y
        m = x.size // x.shape[1]
        if m < 2:
            raise CNNError(
                f"{type(self).__name__} needs more than 1 value per channel in training, got input {x.shape}"
            )
        y, mean, var = kernels.batchnorm_forward_train(
            x, gamma, beta, self.eps, self._cache, relu=relu, overwrite_input=overwrite_input
        )
        mom = self.momentum
        self.buffers["running_mean"][...] = (1.0 - mom) * self.buffers["running_mean"] + mom * mean
        self.buffers["running_var"][...] = (1.0 - mom) * self.buffers["running_var"] + mom * var * (
            m / (m - 1)
        )
        self.buffers["num_batches_tracked"][...] += 1
        return y

    @property
    def relu_fused(self) -> bool:
        """Whether the last forward was a training :meth:`forward_relu` (its backward then takes the
        gradient of the ReLU's output, unless told ``relu_applied``)."""
        return self.training and self._cache.get("relu_out") is not None

    def backward(
        self, grad_out: np.ndarray, overwrite_grad: bool = False, relu_applied: bool = False
    ) -> np.ndarray:
        """The input gradient. ``overwrite_grad=True`` (training only): ``grad_out`` is the caller's to
        give away, and the input gradient is computed in its memory (what :class:`cnn.model.Sequential`
        passes when ``grad_out`` is the fresh input gradient of a convolution, max-pool or dense layer).
        ``relu_applied=True`` (after a training :meth:`forward_relu`): ``grad_out`` is already the
        gradient through the ReLU (a max-pool after it routed it so: ``MaxPool2D.backward(...,
        relu_before=True)``)."""
        # Whether the forward fused a ReLU is recorded in the cache ("relu_out": its output, or None).
        grad_out = np.asarray(grad_out, dtype=self.dtype)
        weight, grads = self.params["weight"], self.grads
        if self.training:
            return kernels.batchnorm_backward_train(
                grad_out,
                weight,
                self._cache,
                grads["weight"],
                grads["bias"],
                overwrite_grad=overwrite_grad,
                relu_applied=relu_applied,
            )
        if self._cache.get("relu_out") is not None:
            grad_out = kernels.relu_backward(grad_out, self._cache["relu_out"])
        return kernels.batchnorm_backward_eval(grad_out, weight, self._cache, grads["weight"], grads["bias"])

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != self._input_ndim - 1 or input_shape[0] != self.num_features:
            raise CNNError(
                f"{type(self).__name__}({self.num_features}) expects {self._input_desc}, "
                f"got sample shape {tuple(input_shape)}"
            )
        return tuple(input_shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm2D(_BatchNorm):
    """Batch norm of (N, C, H, W) feature maps, statistics per channel over N, H, W.

    Reference: :func:`cnn.kernels.reference.batchnorm_train`, :func:`cnn.kernels.reference.batchnorm_eval`.
    """

    _input_ndim = 4
    _input_desc = "(N, C, H, W)"


class BatchNorm1D(_BatchNorm):
    """Batch norm of (N, C) features, statistics per feature over N.

    Reference: :func:`cnn.kernels.reference.batchnorm_train`, :func:`cnn.kernels.reference.batchnorm_eval`.
    """

    _input_ndim = 2
    _input_desc = "(N, C)"


class Dense(Layer):
    """Fully connected layer, as ``torch.nn.Linear``: ``y = x @ weight.T + bias``.

    Shapes: x (N, in_features) -> y (N, out_features). Parameters: ``weight`` (out_features, in_features)
    drawn He-normal ``N(0, 2 / in_features)``; ``bias`` (out_features,) zeros (absent when ``bias=False``).
    Gradients: ``dW = dy.T @ x``, ``db = sum_n dy``, ``dx = dy @ W``.
    Reference: :func:`cnn.kernels.reference.linear`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise CNNError(f"Dense features must be >= 1, got in={in_features}, out={out_features}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.dtype = _as_float_dtype(dtype, "Dense")
        rng = rng if rng is not None else np.random.default_rng()
        self.params["weight"] = he_normal(
            (self.out_features, self.in_features), self.in_features, self.dtype, rng
        )
        if bias:
            self.params["bias"] = np.zeros(self.out_features, dtype=self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        _check_ndim(self, x, (2,), "(N, in_features)")
        _check_channels(self, x, self.in_features, "in_features")
        self._x = x
        return kernels.linear_forward(x, self.params["weight"], self.params.get("bias"))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._x is None:
            raise CNNError("Dense.backward called before forward")
        grad_out = np.asarray(grad_out, dtype=self.dtype)
        return kernels.linear_backward(
            grad_out, self._x, self.params["weight"], self.grads["weight"], self.grads.get("bias")
        )

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.in_features,):
            raise CNNError(f"Dense(in_features={self.in_features}) got sample shape {tuple(input_shape)}")
        return (self.out_features,)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self.params}"


class _DropoutBase(Layer):
    """Inverted dropout: in training, each unit of the mask is kept with probability ``1 - p`` and the
    kept ones are scaled by ``1 / (1 - p)``, so eval mode is the identity. The mask is drawn from
    ``self.rng`` in the input's dtype (float32 stays float32).

    Reference: :func:`cnn.kernels.reference.dropout_mask`.
    """

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise CNNError(f"{type(self).__name__} p must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = rng if rng is not None else np.random.default_rng()
        self._mask: np.ndarray | None = None

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        raise NotImplementedError

    def draw_mask(self, x: np.ndarray) -> np.ndarray | None:
        """Draw (and keep for :meth:`backward`) the mask for the input ``x`` (only its shape and dtype
        are read); None in eval mode or with ``p == 0``, where the layer is the identity."""
        if not self.training or self.p == 0.0:
            self._mask = None
            return None
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
        self._mask = kernels.dropout_mask(self._mask_shape(x), self.p, dtype, self.rng)
        return self._mask

    def forward(self, x: np.ndarray) -> np.ndarray:
        mask = self.draw_mask(x)
        return x if mask is None else x * mask

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out if self._mask is None else grad_out * self._mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout(_DropoutBase):
    """Element-wise inverted dropout, as ``torch.nn.Dropout``: ``y = x * mask``, ``mask`` in
    ``{0, 1/(1-p)}`` per element. Any shape.

    Reference: :func:`cnn.kernels.reference.dropout_mask`.
    """

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        return x.shape


class Dropout2D(_DropoutBase):
    """Channel-wise inverted dropout, as ``torch.nn.Dropout2d``: each (sample, channel) feature map is
    zeroed with probability ``p`` and kept ones are scaled by ``1/(1-p)``. Shapes: (N, C, H, W).

    Reference: :func:`cnn.kernels.reference.dropout_mask` (of shape (N, C, 1, 1)).
    """

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        _check_ndim(self, x, (4,), "(N, C, H, W)")
        return (x.shape[0], x.shape[1], 1, 1)


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), as ``torch.nn.Flatten``; backward restores the shape.

    No kernel: a reshape, its own reference.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] = ()

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out.reshape(self._shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(input_shape)),)
