"""Parameter roles and the optimizer parameter groups built from them.

Every trainable tensor has a role: its kind ("forward" weight, "bias", "feedback", or
"other" for tensors of ordinary modules such as BatchNorm) and the position of its layer
("hidden" or "output"). Groups are built per position, and a feedback tensor sits in its
forward weight's group: with the same direction (Kolen–Pollack) any torch.optim optimizer
then gives both the same increment, momentum and weight decay included.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

_KINDS = {"weight": "forward", "bias": "bias", "feedback": "feedback"}


class Role(NamedTuple):
    kind: str  # "forward" | "bias" | "feedback" | "other"
    position: str  # "hidden" | "output"


def parameter_roles(model: nn.Module) -> dict[str, Role]:
    """Map each parameter name (as in `model.named_parameters()`) to its role."""
    roles: dict[str, Role] = {}
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            position = getattr(module, "position", None)  # feedback and dendritic layers
            if position in ("hidden", "output"):
                roles[full] = Role(_KINDS.get(name, "other"), position)
            else:
                roles[full] = Role("other", "hidden")
    return roles


def param_groups(model: nn.Module, lr: float, output_lr: float | None = None) -> list[dict]:
    """Optimizer parameter groups: "hidden" at `lr`, "output" at `output_lr` (default `lr`).

    >>> opt = torch.optim.SGD(param_groups(model, lr=0.1, output_lr=0.01), lr=0.1)
    """
    roles = parameter_roles(model)
    groups: dict[str, list[nn.Parameter]] = {"hidden": [], "output": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[roles[name].position].append(p)
    lrs = {"hidden": lr, "output": lr if output_lr is None else output_lr}
    return [{"params": ps, "lr": lrs[pos], "name": pos} for pos, ps in groups.items() if ps]
