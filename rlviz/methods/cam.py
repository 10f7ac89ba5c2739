"""Class activation maps: CAM, Grad-CAM, Grad-CAM++.

- Zhou et al. 2016, "Learning Deep Features for Discriminative Localization" (CAM),
  https://arxiv.org/abs/1512.04150.
- Selvaraju et al. 2017, "Grad-CAM", https://arxiv.org/abs/1610.02391.
- Chattopadhay et al. 2018, "Grad-CAM++", https://arxiv.org/abs/1710.11063 (channel weights as in
  pytorch-grad-cam's closed form).

All three read one layer's activations A [B, K, h, w] and the target's gradient with respect to
them, and weight the K maps. The forward pass runs without autograd up to that layer and with it
after, so the single backward pass goes from the target to the layer only, never to the input.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from rlviz import hooks
from rlviz.hooks import get_layer, list_layers
from rlviz.methods.base import AttributionMethod, scalar_per_sample
from rlviz.methods.registry import register
from rlviz.policy import PolicyAdapter
from rlviz.policy.adapter import State
from rlviz.targets import Target

_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)


def layer_activations_and_gradients(
    adapter: PolicyAdapter,
    x: torch.Tensor,
    target: Target,
    layer: str,
    at_input: bool = False,
    states: State | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations of ``layer`` (its output, or its input if ``at_input``) and d target / d them,
    a recurrent policy's forward entering ``states``.

    Returns:
        (activations, gradients), both [B, K, h, w], detached.
    """
    module = get_layer(adapter.model, layer)
    calls: list[torch.Tensor] = []  # one leaf per call: a shared trunk may run twice per forward

    def grab(value: object) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"layer {layer!r} gives {type(value).__name__}; CAM methods need a Tensor"
            )
        # Autograd starts here: everything before the layer ran under no_grad. The outer
        # torch.no_grad() block restores the caller's grad mode when the forward pass ends.
        torch.set_grad_enabled(True)
        leaf = value.detach().requires_grad_(True)
        calls.append(leaf)
        # The network continues on a copy, so an in-place op downstream (ReLU(inplace=True))
        # neither corrupts the recorded activations nor trips autograd's leaf check.
        return leaf.clone()

    if at_input:
        handle = module.register_forward_pre_hook(lambda _m, args: (grab(args[0]), *args[1:]))
    else:
        handle = module.register_forward_hook(lambda _m, _args, out: grab(out))
    try:
        with torch.no_grad():
            values = target(adapter.outputs(x, states))
    finally:
        handle.remove()
    if not calls:
        raise ValueError(
            f"layer {layer!r} was not called in the policy's forward; pick a layer it runs"
        )
    if calls[0].ndim != 4:
        convs = ", ".join(list_layers(adapter.model, nn.Conv2d)) or "(none)"
        raise ValueError(
            f"CAM methods need a layer with a spatial output [B, K, h, w]; {layer!r} gives shape "
            f"{tuple(calls[0].shape)}. Conv layers: {convs}"
        )
    values = scalar_per_sample(values, x.shape[0])
    if not values.requires_grad:
        raise ValueError(
            f"the target does not depend on layer {layer!r}: no gradient reaches it from the "
            "target (a layer of another head?); name a layer on the target's path"
        )
    with torch.enable_grad():  # the caller may be inside torch.no_grad()
        grads = torch.autograd.grad(values.sum(), calls, allow_unused=True)
    return _call_on_path(layer, calls, grads)


def _call_on_path(
    layer: str, calls: list[torch.Tensor], grads: tuple[torch.Tensor | None, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (activations, gradients) of the one call of ``layer`` the target depends on.

    A layer called several times in one forward (a trunk shared by ``actor(x)`` and
    ``critic(x)``) has one activation per call; only a call on the target's path has a gradient.
    Several calls on the path (a siamese or per-frame encoder) have no single map: raise.
    """
    on_path = [i for i, g in enumerate(grads) if g is not None]
    if not on_path:
        raise ValueError(
            f"the target does not depend on layer {layer!r} (called {len(calls)} time(s), no "
            "gradient reaches any call); name a layer on the target's path"
        )
    if len(on_path) > 1:
        raise ValueError(
            f"layer {layer!r} is called {len(calls)} times in one forward and the target depends "
            f"on calls {on_path} (e.g. one encoder run per frame or per input), so it has no "
            "single map; name a layer that runs once, or run the encoder once in the forward"
        )
    index = on_path[0]
    return calls[index].detach(), grads[index]


def weighted_maps(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """sum_k weights[b, k] * acts[b, k] -> [B, h, w], as one batched matrix product (faster
    than einsum or broadcasting on CPU)."""
    batch, channels, height, width = acts.shape
    flat = acts.reshape(batch, channels, height * width)
    return torch.bmm(weights.unsqueeze(1), flat).reshape(batch, height, width)


class AllZeroMapWarning(UserWarning):
    """A CAM came out all zero for some frames; the message says why."""


def _warn_if_all_zero(method, maps, acts, grads, layer: str) -> None:
    """Say why a CAM is all zero, rather than hand back a blank map as an explanation."""
    flat = maps.reshape(maps.shape[0], -1)
    blank = (flat == 0).all(dim=1)
    if not bool(blank.any()):
        return
    rows = blank.nonzero()[:, 0].tolist()
    shown = f"{rows[:5]}{' ...' if len(rows) > 5 else ''}"
    no_grad = (grads[blank].reshape(len(rows), -1) == 0).all(dim=1)
    no_act = (acts[blank].reshape(len(rows), -1) == 0).all(dim=1)
    if bool(no_grad.all()):
        why = (
            f"the target's gradient at {layer!r} is exactly zero there (dead ReLUs after the "
            "layer, or an output that does not depend on it)"
        )
    elif bool(no_act.all()):
        why = f"layer {layer!r} outputs only zeros there (every unit is off)"
    else:
        why = (
            "every location's weighted sum is negative and the ReLU keeps only positive "
            "evidence; relu=False (gradcam) shows the signed map"
        )
    warnings.warn(
        f"{type(method).__name__} map is all zero for {len(rows)} of {maps.shape[0]} frame(s) "
        f"{shown}: {why}",
        AllZeroMapWarning,
        stacklevel=4,
    )


class _LayerMethod(AttributionMethod):
    """Shared by the CAM family: resolve the layer, get activations and gradients, weight maps."""

    needs_layer = True
    low_res = True
    per_frame_mode = "newest"

    def default_layer(self, model: nn.Module) -> tuple[str, bool]:
        """(layer name, read its input?) used when the caller names no layer."""
        return hooks.default_layer(model), False

    def _maps(self, adapter, x, target, request):
        if request.layer is not None:
            name, at_input = request.layer, False
        elif getattr(adapter, "cam_layer", None) is not None and not isinstance(self, CAM):
            name, at_input = adapter.cam_layer, False  # the constructor knows the actor's layer
        else:
            name, at_input = self.default_layer(adapter.model)
        acts, grads = layer_activations_and_gradients(
            adapter, x, target, name, at_input, request.states
        )
        maps = self._combine(acts, grads, name)
        _warn_if_all_zero(self, maps, acts, grads, name)
        return maps

    def _combine(self, acts: torch.Tensor, grads: torch.Tensor, layer: str) -> torch.Tensor:
        raise NotImplementedError


@register("cam", "CAM")
class CAM(_LayerMethod):
    """Exact CAM (Zhou et al. 2016) for networks that end in global average pooling + linear heads.

    M = sum_k w_k F_k, with F the pooled feature maps and w the head's weights for the target:
    for an action-logit target the map's spatial mean plus the bias is exactly that logit. The
    weights are read off the gradient (d target / d F = w / (h w), constant over space), which also
    covers log-prob targets (w_a - E_pi[w]). By default F is the input of the model's last
    ``AdaptiveAvgPool2d``/``AvgPool2d``. If the gradient varies over space (no global pooling, a
    flatten + linear head, a ReLU after the layer) CAM is undefined and this raises; use
    ``gradcam`` there.
    """

    signed = True
    tolerance = 1e-4

    def default_layer(self, model: nn.Module) -> tuple[str, bool]:
        pools = [name for name, m in model.named_modules() if name and isinstance(m, _GLOBAL_POOLS)]
        if pools:
            return pools[-1], True
        return hooks.default_layer(model), False

    def _combine(self, acts, grads, layer):
        # The head's structure is the same for every frame, so a few frames suffice to check it
        # (a ReLU after the layer shows up as zeros in almost any frame).
        probe = grads[:8]
        spread = (probe.amax(dim=(2, 3)) - probe.amin(dim=(2, 3))).max()
        scale = probe.abs().max()
        if spread > self.tolerance * scale:
            raise ValueError(
                f"CAM needs global average pooling + linear heads after layer {layer!r}, but the "
                "target's gradient varies over the map (relative spread "
                f"{float(spread / scale):.3g}); "
                "this network's head is not GAP + linear there. Use 'gradcam', or name the layer "
                "that feeds the global pooling with layer=..."
            )
        h, w = acts.shape[-2:]
        return weighted_maps(grads.mean(dim=(2, 3)) * (h * w), acts)


@register("gradcam", "Grad-CAM")
class GradCAM(_LayerMethod):
    """Grad-CAM: ReLU(sum_k w_k A_k) with w_k the spatial mean of d target / d A_k.

    Args:
        relu: keep only positive evidence (the paper); ``False`` gives a signed map.
    """

    def __init__(self, relu: bool = True) -> None:
        self.relu = bool(relu)
        self.signed = not self.relu

    def _combine(self, acts, grads, layer):
        cam = weighted_maps(grads.mean(dim=(2, 3)), acts)
        return cam.clamp_(min=0) if self.relu else cam


@register("gradcam_pp", "Grad-CAM++", aliases=("gradcam++",))
class GradCAMPlusPlus(_LayerMethod):
    """Grad-CAM++: channel weights sum_ij relu(g_ij) a_ij with
    a_ij = g^2 / (2 g^2 + sum(A) g^3) (Chattopadhay et al. eq. 19), then ReLU(sum_k w_k A_k)."""

    eps = 1e-6

    def _combine(self, acts, grads, layer):
        # relu(g) * a_ij = g^3 / (2 g^2 + S g^3 + eps) = g / (2 + S g + eps / g^2) where g > 0,
        # and 0 where g == 0 (eps / 0 = inf). The second form needs fewer passes over the maps,
        # which are memory-bound: this is a third of the method's time at batch 128 on CPU.
        total = acts.sum(dim=(2, 3), keepdim=True)
        g = grads.clamp(min=0)
        denominator = g.pow(-2).mul_(self.eps).add_(2).addcmul_(g, total)
        weights = torch.div(g, denominator, out=denominator).sum(dim=(2, 3))
        return weighted_maps(weights, acts).clamp_(min=0)
