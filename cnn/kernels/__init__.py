"""Numerical kernels behind the layers: the fast path, and its readable reference.

The layers in :mod:`cnn.layers` and :mod:`cnn.activations` read like their equations and call these
functions; everything done for speed lives here, one concern per module:

=================  =====================================================================================
``reference``      plain loops that read like the equations: the specification the fast kernels are
                   tested against (start here to learn what each kernel computes)
``columns``        sliding-window geometry, im2col / col2im (one slice copy per kernel offset)
``conv``           2-D convolution forward/backward as im2col + GEMM; an inference forward fused
                   with eval batch norm, ReLU and max-pool
``pool``           max and average pooling forward/backward
``norm``           batch norm forward/backward (training and eval), optionally fused with ReLU
``linear``         fully connected forward/backward
``pointwise``      ReLU and the inverted-dropout mask
``threads``        the thread pool (``parallel``, ``parallel_chunks``, ``set_num_threads``, ``blas_held``)
``memory``         channel-major layout, reused buffers (``Workspace``), recycled outputs (``empty``)
=================  =====================================================================================

Conventions: arrays are NCHW by shape; the 4-D arrays returned live in memory as (C, N, H, W) (an
NCHW transposed view), and any input layout is accepted. Results do not depend on the number of threads
or their timing. Why it is built this way and what was measured: ``docs/library.md``, "How it is fast".

``from cnn import kernels; kernels.conv2d_forward(...)``: every public name is re-exported here.
"""

from cnn.kernels.columns import IntPair, col2im, conv_output_size, im2col, pair
from cnn.kernels.conv import conv2d_backward, conv2d_forward, conv2d_forward_eval
from cnn.kernels.linear import linear_backward, linear_forward
from cnn.kernels.memory import Workspace, channel_major, empty, empty_channel_major, empty_like_layout
from cnn.kernels.norm import (
    batchnorm_backward_eval,
    batchnorm_backward_train,
    batchnorm_forward_eval,
    batchnorm_forward_train,
)
from cnn.kernels.pointwise import dropout_mask, relu_backward, relu_forward
from cnn.kernels.pool import avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward
from cnn.kernels.threads import blas_held, get_num_threads, parallel, parallel_chunks, set_num_threads, split

__all__ = [
    "IntPair",
    "Workspace",
    "avgpool2d_backward",
    "avgpool2d_forward",
    "batchnorm_backward_eval",
    "batchnorm_backward_train",
    "batchnorm_forward_eval",
    "batchnorm_forward_train",
    "blas_held",
    "channel_major",
    "col2im",
    "conv2d_backward",
    "conv2d_forward",
    "conv2d_forward_eval",
    "conv_output_size",
    "dropout_mask",
    "empty",
    "empty_channel_major",
    "empty_like_layout",
    "get_num_threads",
    "im2col",
    "linear_backward",
    "linear_forward",
    "maxpool2d_backward",
    "maxpool2d_forward",
    "pair",
    "parallel",
    "parallel_chunks",
    "relu_backward",
    "relu_forward",
    "set_num_threads",
    "split",
]
