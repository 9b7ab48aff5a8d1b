"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss decomposed into canonical ops, mirroring ONNX's
reference: the picked (negated) log-probability per target, zero where the target is ``ignore_index``, times
the class weight (gathered with clipped indices); ``mean`` divides by the summed weights when there are any."""
from __future__ import annotations

from sparsecc.ir.graph import TensorType

from ..importer import NodeContext
from .common import Result, converter, reshape, scalar, typeof
from .softmax import reference_softmax


def _nll(cx: NodeContext, x: str) -> str:
    """The loss from log-probabilities ``x`` [N, C, d...] and the target (input 1)."""
    xt, tt = typeof(cx, x), cx.type(1)
    dtype = xt.dtype
    if tt.dtype not in ("int32", "int64") or any(isinstance(d, str) for d in xt.shape[1:2]):
        raise cx.unsupported(f"target of {tt.dtype} / input of shape {list(xt.shape)}")
    reduction = cx.attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise cx.unsupported(f"reduction={reduction!r}")
    ignore = cx.attr("ignore_index")
    target = cx.value(1)
    ignored = None
    if ignore is not None:
        ignored = cx.emit("equal", [target, scalar(cx, int(ignore), tt.dtype)], TensorType(tt.shape, "bool"))
        target = cx.emit("where", [ignored, scalar(cx, 0, tt.dtype), target], tt)
    classes = xt.shape[1]
    index = reshape(cx, target, [tt.shape[0], 1, *tt.shape[1:]])
    picked = cx.emit("gather_elements", [x, index], TensorType(typeof(cx, index).shape, dtype), axis=1)
    loss = cx.emit("neg", [reshape(cx, picked, list(tt.shape))], TensorType(tt.shape, dtype))
    zero = scalar(cx, 0, dtype)
    if ignored is not None:
        loss = cx.emit("where", [ignored, zero, loss], typeof(cx, loss))
    weight = None
    if cx.has_input(2):
        clipped = cx.emit("clip", [cx.value(1)], tt, min=0, max=classes - 1)
        weight = cx.emit("gather", [cx.value(2), clipped], TensorType(tt.shape, dtype), axis=0)
        if ignored is not None:
            weight = cx.emit("where", [ignored, zero, weight], typeof(cx, weight))
    elif ignored is not None and not (ignore == -1 and cx.op_type == "NegativeLogLikelihoodLoss"):
        # (the reference NLL takes a plain mean over all elements when ignore_index is -1; its SCE does not)
        weight = cx.emit("where", [ignored, zero, scalar(cx, 1, dtype)], TensorType(tt.shape, dtype))
    if weight is not None:
        loss = cx.emit("mul", [weight, loss], typeof(cx, loss))
    scalar_t = TensorType((), dtype)
    if reduction == "none":
        return loss
    total = cx.emit("reduce_sum", [loss], scalar_t, axes=None, keepdims=False)
    if reduction == "sum":
        return total
    if weight is not None:
        return cx.emit("div", [total, cx.emit("reduce_sum", [weight], scalar_t, axes=None, keepdims=False)], scalar_t)
    return cx.emit("reduce_mean", [loss], scalar_t, axes=None, keepdims=False)


@converter("NegativeLogLikelihoodLoss")
def nll_loss(cx: NodeContext) -> list[Result]:
    if cx.dtype(0) not in ("float32", "float64", "float16"):
        raise cx.unsupported(f"input of {cx.dtype(0)}")
    return [_nll(cx, cx.value(0))]


@converter("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy(cx: NodeContext) -> list[Result]:
    """log(softmax(x, axis=1)) as the reference computes it (max-shifted exp, divided, then log), then NLL."""
    if cx.dtype(0) not in ("float32", "float64", "float16"):
        raise cx.unsupported(f"input of {cx.dtype(0)}")
    x = cx.value(0)
    log_prob = reference_softmax(cx, x, 1, log=True)
    return [_nll(cx, log_prob), log_prob]
