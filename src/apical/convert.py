"""Swap every nn.Linear and nn.Conv2d of a model for feedback layers sized for a rule."""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from apical.errors import ApicalError
from apical.layers import FeedbackConv2d, FeedbackLayer, FeedbackLinear
from apical.rules.base import Rule

_SWAPPABLE = (nn.Linear, nn.Conv2d, FeedbackLayer)


def _trace(
    model: nn.Module, example_input: Tensor
) -> tuple[dict[str, tuple[int, ...]], set[str], int]:
    """Input shape (without batch) of every swappable layer in call order, the layers that
    read the model's input itself (or a view of it, e.g. flattened), and the output size."""
    shapes: dict[str, tuple[int, ...]] = {}
    on_input: set[str] = set()
    storage = example_input.untyped_storage().data_ptr()
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, _SWAPPABLE):

            def record(mod, args, name=name):
                shapes.setdefault(name, tuple(args[0].shape[1:]))
                if args[0].untyped_storage().data_ptr() == storage:
                    on_input.add(name)

            hooks.append(module.register_forward_pre_hook(record))
    was_training = model.training
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        model.eval()
        with torch.no_grad():
            out = model(example_input)
    except RuntimeError as e:
        raise ApicalError(
            f"the model does not accept the example input of shape "
            f"{tuple(example_input.shape)}: {str(e).splitlines()[0]}"
        ) from None
    finally:
        for h in hooks:
            h.remove()
        model.load_state_dict(buffers)
        model.train(was_training)
    return shapes, on_input, math.prod(out.shape[1:])


def _swap(
    module: nn.Module,
    rule: Rule,
    input_shape: tuple[int, ...] | None,
    n_outputs: int,
    reads_input: bool,
    position: str,
    generator: torch.Generator | None,
) -> FeedbackLayer:
    spec = rule.feedback_spec(tuple(module.weight.shape), input_shape, n_outputs)
    kwargs = dict(
        bias=module.bias is not None,
        feedback=None if reads_input else spec,
        recurrent=rule.recurrent_spec(tuple(module.weight.shape), position),
        generator=generator,
        device=module.weight.device,
        dtype=module.weight.dtype,
    )
    if isinstance(module, nn.Linear | FeedbackLinear):
        new = FeedbackLinear(module.in_features, module.out_features, **kwargs)
    else:
        if getattr(module, "padding_mode", "zeros") != "zeros":
            raise ApicalError(
                f"Conv2d with padding_mode={module.padding_mode!r} is not supported; "
                "use zero padding (pad explicitly before the convolution)"
            )
        new = FeedbackConv2d(
            module.in_channels, module.out_channels, module.kernel_size, module.stride,
            module.padding, module.dilation, module.groups, **kwargs,
        )  # fmt: skip
    with torch.no_grad():
        new.weight.copy_(module.weight)
        if module.bias is not None:
            new.bias.copy_(module.bias)
    return new


def convert(
    model: nn.Module,
    rule: Rule,
    example_input: Tensor,
    *,
    generator: torch.Generator | None = None,
    inplace: bool = False,
) -> nn.Module:
    """Return `model` with every nn.Linear / nn.Conv2d (and feedback layer) replaced by a
    feedback layer for `rule`, forward weights and biases kept.

    `example_input` (a batch) is run once to find each layer's input shape (which sizes
    direct-feedback projections) and the call order: the last layer called is the
    "output" layer, the others "hidden". A layer that reads the model's input directly gets
    no feedback tensor: no rule sends an error into the data. Feedback tensors are drawn
    from `generator` (the global RNG when None). The model's buffers and training mode are
    left as they were. Last, the rule may wrap the model (`Rule.wrap`).
    """
    if not isinstance(model, nn.Module):
        raise ApicalError(f"convert expects a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    shapes, on_input, n_outputs = _trace(model, example_input)
    if not shapes:
        raise ApicalError("the model has no nn.Linear or nn.Conv2d layer to convert")
    output_layer = list(shapes)[-1]
    for name, module in list(model.named_modules()):
        if not isinstance(module, _SWAPPABLE):
            continue
        position = "output" if name == output_layer else "hidden"
        new = _swap(
            module, rule, shapes.get(name), n_outputs, name in on_input, position, generator
        )
        new.position = position
        if not name:
            return rule.wrap(new)  # the model itself was a single layer
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, new)
    return rule.wrap(model)
