"""What every layout shares: the constructor's opening and the canonical state dict.

A layout holds AlexNet's parameters under its own module names (`stack.conv1.weight`,
`towers.1.conv1.weight`, ...), but its state dict uses the canonical names and shapes, `conv1.weight` ...
`fc8.bias` (the merged, caffe-shaped tensors), so a checkpoint of any layout loads into any other. The
renaming runs in torch's own state-dict hooks, which receive the `prefix` a parent module passes down: a
wrapper (nn.Sequential, a parent module, DistributedDataParallel, torch.compile, AveragedModel) then
saves and loads `prefix + canonical name` like any other module's entries. `load_state_dict(sd,
strict=False)` loads the canonical entries given and lists the missing and unexpected ones under their
canonical names, as torch does; a mis-shaped entry is refused either way.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..layers import canonical_shapes, check_arguments, check_state_dict, init_weights


class Layout(nn.Module):
    """Base of the three layouts. A subclass builds its modules inside `built_on_meta(init)`, says where
    they live in `placement`, and maps its parameter names to canonical ones in `to_canonical` /
    `from_canonical` (also used for gradients and momentum buffers)."""

    def __init__(self, num_classes: int, in_channels: int, init: str):
        super().__init__()
        check_arguments(num_classes, in_channels, init)
        self.num_classes, self.in_channels = num_classes, in_channels
        self.register_state_dict_post_hook(_to_canonical_names)
        self.register_load_state_dict_pre_hook(_from_canonical_names)

    @contextmanager
    def built_on_meta(self, init: str):
        """Build the modules on the meta device, then allocate them where `placement` says and draw the
        canonical init. Building on the CPU would run PyTorch's default init, which draws as many numbers
        from the global RNG as the layout holds (a whole net, or one tower), so each layout would start
        `init_weights` from a different RNG state; on meta nothing is drawn, and a seed gives the same
        weights in every layout and world size."""
        with torch.device("meta"):
            yield
        for module, device in self.placement():
            module.to_empty(device=device)
        self.load_state_dict(init_weights(self.num_classes, self.in_channels, init))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """torch's, with a state dict of another architecture refused in one sentence when strict, before anything
        is copied (torch tells a submodule's hooks nothing of `strict`, so a wrapper's strict load gets torch's
        own list of missing and unexpected keys instead)."""
        if strict:
            check_state_dict(dict(state_dict), self.num_classes, self.in_channels)
        return super().load_state_dict(state_dict, strict, assign)

    def extra_repr(self) -> str:
        # print(model) lists module names (stack.conv1, towers.0.conv1); a user comparing them with a
        # checkpoint's keys is told here, where they look, that the state dict speaks another name.
        return (f"num_classes={self.num_classes}, in_channels={self.in_channels}; state_dict() keys are canonical, "
                "conv1.weight ... fc8.bias (alexnet2gpu.canonical_shapes), not the module names below")

    def placement(self) -> list[tuple[nn.Module, torch.device]]:
        """(module, device) pairs for `built_on_meta`: by default the whole layout on the CPU."""
        return [(self, torch.device("cpu"))]

    def to_canonical(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tensors keyed by this module's parameter names (weights, gradients, momentum) -> canonical names."""
        raise NotImplementedError

    def from_canonical(self, canonical: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inverse of `to_canonical`: canonical tensors keyed by this module's parameter names."""
        raise NotImplementedError


def _to_canonical_names(module: Layout, state: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict post-hook: replace this layout's entries in `state` by canonical ones under `prefix`."""
    own = {}
    for name, _ in module.named_parameters():
        if prefix + name in state:
            # contiguous CPU copies: checkpoints do not carry the channels-last layout of the conv weights
            own[name] = state.pop(prefix + name).detach().cpu().clone(memory_format=torch.contiguous_format)
    for name, tensor in module.to_canonical(own).items():  # collective in the tower-parallel layout
        state[prefix + name] = tensor


def _from_canonical_names(module: Layout, state: dict, prefix: str, local_metadata, strict, missing_keys,
                          unexpected_keys, error_msgs) -> None:
    """Load-state-dict pre-hook: check the shapes of the canonical entries under `prefix` (one sentence if one is
    not this architecture's), list the missing and unexpected ones, then rename the others to this layout's
    parameters, which torch then copies in."""
    canonical = {key[len(prefix):]: state.pop(key) for key in list(state) if key.startswith(prefix)}
    shapes = canonical_shapes(module.num_classes, module.in_channels)
    given = {k: v for k, v in canonical.items() if k in shapes}
    # the missing ones stand in as empty meta tensors, so that only the shapes of those given are checked
    check_state_dict({k: torch.empty(shape, device="meta") for k, shape in shapes.items()} | given,
                     module.num_classes, module.in_channels)
    missing_keys += [prefix + k for k in shapes if k not in given]
    unexpected_keys += [prefix + k for k in canonical if k not in shapes]
    renamed = module.from_canonical(given)
    for name, param in module.named_parameters():  # a missing one keeps its value (torch would list its own name)
        renamed.setdefault(name, param.detach())
    state.update({prefix + name: tensor for name, tensor in renamed.items()})
