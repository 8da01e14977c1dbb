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


def param_groups(
    model: nn.Module, lr: float, output_lr: float | None = None, bias_decay: bool = True
) -> list[dict]:
    """Optimizer parameter groups: "hidden" at `lr`, "output" at `output_lr` (default `lr`);
    with `bias_decay = False` the biases of each position get a group of their own with
    weight decay 0 (Kolen–Pollack decays only weights and feedback, Akrout et al. 2019).

    >>> opt = torch.optim.SGD(param_groups(model, lr=0.1, output_lr=0.01), lr=0.1)
    """
    roles = parameter_roles(model)
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for position in ("hidden", "output"):
        for bias in (False, True):
            groups[position, bias] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            role = roles[name]
            groups[role.position, role.kind == "bias" and not bias_decay].append(p)
    lrs = {"hidden": lr, "output": lr if output_lr is None else output_lr}
    out = []
    for (position, no_decay), ps in groups.items():
        if ps:
            group = {"params": ps, "lr": lrs[position], "name": position}
            if no_decay:
                group.update(weight_decay=0.0, name=f"{position} biases")
            out.append(group)
    return out
