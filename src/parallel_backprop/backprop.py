"""Backpropagation: the forward pass, the deltas and the gradients. All the math.

This is the reference every executor is checked against; executors only
decide where shards of a batch run and how their gradients are summed.
It allocates nothing per call: every array it writes is a preallocated
buffer in a :class:`Workspace` (or a view of one).

Shapes, for a shard of ``n`` samples and layer ``l`` with ``n_in -> n_out``::

    x        (n, sizes[0])       input
    a[l]     (n, sizes[l])       activations, a[0] = x, a[L] = output
    W_l      (n_in, n_out)       b_l (n_out,)
    delta[l] (n, sizes[l])       dLoss/dz at layer l
    dW_l     (n_in, n_out)       = a[l-1]^T @ delta[l], summed over the shard
    db_l     (n_out,)            = column sums of delta[l]
    weights  (n,)                optional per-row sample weights: row i of
                                 delta[L] (hence of every delta) times weights[i]

Gradients and losses are SUMS over the shard, never means: shards of uneven
size then add up exactly, and the executor divides once by the global batch
(:func:`layer_gradient`'s ``scale``, 1 / batch for an optimizer's mean).
"""

from __future__ import annotations

import copy

import numpy as np

from .activations import get_activation, loss_sum, output_delta
from .gemm import gemm
from .network import Network


class Workspace:
    """Buffers for one worker's forward and backward pass, up to ``rows`` samples."""

    def __init__(self, network: Network, rows: int, dtype: np.dtype | type = np.float32):
        self.network = network
        self.rows = rows
        self.functions = [get_activation(name) for name in network.activations]
        widths = network.sizes[1:]
        self.a = [np.empty((rows, w), dtype) for w in widths]        # a[1..L]
        self.delta = [np.empty((rows, w), dtype) for w in widths]    # delta[1..L]
        self.scratch = [np.empty((rows, w), dtype) for w in widths]  # for f'
        self.bias_step = [np.empty(w, dtype) for w in widths]         # fused update
        # Pre-activations are kept only for activations whose derivative
        # needs its input (user-defined ones); the built-ins use the output.
        self.z = [np.empty((rows, w), dtype) if f.derivative_from == "input" else None
                  for f, w in zip(self.functions, widths)]

    def row_view(self, start: int, stop: int) -> "Workspace":
        """A workspace over rows [start, stop) of this one's buffers: views, no copy.

        Parallel workers each write their rows of one shared workspace; the
        bias scratch stays shared (workers use disjoint columns of it).
        """
        view = copy.copy(self)
        view.rows = stop - start
        view.a, view.delta, view.scratch = ([buffer[start:stop] for buffer in buffers]
                                            for buffers in (self.a, self.delta, self.scratch))
        view.z = [None if buffer is None else buffer[start:stop] for buffer in self.z]
        return view


def forward(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray,
            ws: Workspace) -> np.ndarray:
    """Activations of every layer for ``x`` (n, sizes[0]); returns the output (n, sizes[-1]).

    ``layers`` are the ``(W, b)`` views from :meth:`Network.layers`.
    """
    n = x.shape[0]
    a_prev = x
    for l, (weights, bias) in enumerate(layers):
        z = ws.a[l][:n]
        gemm(a_prev, weights, z)              # (n, n_in) @ (n_in, n_out)
        z += bias
        if ws.z[l] is not None:
            ws.z[l][:n] = z
        a = ws.functions[l].function(z)       # in place for the built-ins
        if a is not z:
            z[...] = a
        a_prev = z
    return a_prev


def backward(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray,
             ws: Workspace, *, grads: list[tuple[np.ndarray, np.ndarray]] | None = None,
             update_scale: float | None = None, weights: np.ndarray | None = None) -> float:
    """Backpropagate the batch's error; returns the loss sum.

    Needs the activations of a :func:`forward` on the same ``x`` in ``ws``;
    ``y`` (n, sizes[-1]) holds the targets. Exactly one of:

    grads
        ``(dW, db)`` views of a flat buffer, filled with the gradient SUMS.
    update_scale
        ``s = lr / batch``: the SGD update is folded into the gradient
        product, ``W := W - s * a_prev^T @ delta`` in one GEMM with beta = 1,
        so the gradient is never written out (saves a write and two passes
        over the parameters per step, ~3% of a Net-1h step at batch 128).

    ``weights`` (n,): per-row sample weights (see :func:`deltas`).
    """
    loss = deltas(layers, x, y, ws, weights)
    n = x.shape[0]
    for l, (weights, bias) in enumerate(layers):
        a_prev = x if l == 0 else ws.a[l - 1][:n]
        delta = ws.delta[l][:n]
        if grads is not None:
            layer_gradient(a_prev, delta, *grads[l], 1.0)
        else:
            update(weights, bias, a_prev, delta, update_scale, ws.bias_step[l])
    return loss


def deltas(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray,
           ws: Workspace, weights: np.ndarray | None = None) -> float:
    """Every layer's delta into ``ws.delta`` (n rows); returns the loss sum.

    Needs the activations of a :func:`forward` on the same ``x`` in ``ws``.
    Reads the weights and changes nothing else, so the updates can come after.
    ``weights`` (n,), per-row sample weights: the output delta's rows are
    scaled by them before they propagate, so every layer's delta, and hence
    every gradient, is the weighted sum; the loss is the weighted sum too.
    """
    n = x.shape[0]
    network = ws.network
    last = network.n_layers - 1
    output = ws.a[last][:n]
    loss = loss_sum(network.activations[-1], network.loss, output, y, weights)
    # Output delta: (a - y) * f'(a) for MSE, a - y for matched cross-entropy.
    delta = output_delta(ws.functions[last], network.loss, output, y,
                         None if ws.z[last] is None else ws.z[last][:n],
                         out=ws.delta[last][:n], scratch=ws.scratch[last][:n])
    if weights is not None:
        delta *= weights[:, None]     # dLoss_w/dz of row i is w_i times the unweighted one
    for l in range(last, 0, -1):
        # Hidden delta: (delta @ W^T) * f'(a_prev), f' from the stored output.
        layer_weights = layers[l][0]
        a_prev, delta_prev = ws.a[l - 1][:n], ws.delta[l - 1][:n]
        gemm(delta, layer_weights.T, delta_prev)                 # (n, n_out) @ (n_out, n_in)
        z_prev = None if ws.z[l - 1] is None else ws.z[l - 1][:n]
        ws.functions[l - 1].scale_delta(delta_prev, a_prev, z_prev, ws.scratch[l - 1][:n])
        delta = delta_prev
    return loss


def update(weights: np.ndarray, bias: np.ndarray, a_prev: np.ndarray, delta: np.ndarray,
           scale: float, bias_step: np.ndarray) -> None:
    """The SGD step of one layer, or of some of its output columns, folded into the product.

    ``W -= scale * a_prev^T @ delta`` in one GEMM with beta = 1 (no gradient
    written) and ``b -= scale * column sums of delta``. W (n_in, m), b (m,),
    a_prev (n, n_in), delta (n, m), bias_step (m,) scratch; W, b and delta
    may be column slices of a layer's arrays.
    """
    gemm(a_prev.T, delta, weights, alpha=-scale, beta=1.0)  # (n_in, n) @ (n, m)
    np.sum(delta, axis=0, out=bias_step)
    bias_step *= scale
    bias -= bias_step


def layer_gradient(a_prev: np.ndarray, delta: np.ndarray, grad_weights: np.ndarray,
                   grad_bias: np.ndarray, scale: float) -> None:
    """``scale`` times one layer's gradient sum, or some of its output columns, into buffers.

    ``dW = scale * a_prev^T @ delta`` in one GEMM with beta = 0 and
    ``db = scale * column sums of delta``: with ``scale = 1 / batch`` the
    gradient MEAN an optimizer takes. dW (n_in, m), db (m,), a_prev (n, n_in),
    delta (n, m); dW, db and delta may be column slices of a layer's arrays.
    """
    gemm(a_prev.T, delta, grad_weights, alpha=scale)        # (n_in, n) @ (n, m)
    np.sum(delta, axis=0, out=grad_bias)
    if scale != 1.0:
        grad_bias *= scale


def accumulate(a_prev: np.ndarray, delta: np.ndarray, velocity_weights: np.ndarray,
               velocity_bias: np.ndarray, scale: float, mu: float,
               bias_step: np.ndarray) -> None:
    """``v := mu * v + scale * gradient sum`` for one layer (or some of its output columns).

    Momentum's velocity update folded into the gradient product: one GEMM
    with beta = mu on the velocity, so the gradient is never written out.
    Shapes as :func:`update`; ``bias_step`` (m,) is scratch.
    """
    gemm(a_prev.T, delta, velocity_weights, alpha=scale, beta=mu)   # (n_in, n) @ (n, m)
    np.sum(delta, axis=0, out=bias_step)
    bias_step *= scale
    velocity_bias *= mu
    velocity_bias += bias_step


def gradient(network: Network, params: np.ndarray, x: np.ndarray, y: np.ndarray,
             ws: Workspace | None = None,
             weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Loss sum and gradient sum (flat, same layout as ``params``) for one batch.

    A convenience for tests and one-off use; executors keep their buffers.
    ``weights`` (n,): per-row sample weights (see :func:`deltas`).
    """
    ws = ws or Workspace(network, x.shape[0], params.dtype)
    grad = np.empty_like(params)
    layers = network.layers(params)
    forward(layers, x, ws)
    loss = backward(layers, x, y, ws, grads=network.layers(grad), weights=weights)
    return loss, grad
