"""Input attributions through Captum, and NullMass@k (Shah, Jain & Netrapalli 2021).

`attribute(model, images, target, config)` returns (N, C, H, W) attributions (Grad-CAM: (N, 1, H, W)),
computed in eval mode in chunks of `config.batch_size` images (memory is bounded, the answer
is not changed). A CUDA out-of-memory halves the chunk and retries.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lenscape.analysis.evaluation import Progress, _no_progress, evaluate, in_chunks
from lenscape.errors import InvalidInputError

METHODS = (
    "gradient",
    "loss_gradient",
    "gradient_x_input",
    "smoothgrad",
    "vargrad",
    "integrated_gradients",
    "guided_backprop",
    "deeplift",
    "occlusion",
    "gradcam",
    "random",
)
METHOD_LABELS = {
    "gradient": "Gradient (logit)",
    "loss_gradient": "Gradient (loss)",
    "gradient_x_input": "Gradient × input",
    "smoothgrad": "SmoothGrad",
    "vargrad": "VarGrad",
    "integrated_gradients": "Integrated Gradients",
    "guided_backprop": "Guided Backprop",
    "deeplift": "DeepLift",
    "occlusion": "Occlusion",
    "gradcam": "Grad-CAM",
    "random": "Random",
}
BASELINES = ("zeros", "blurred", "mean")


@dataclass(frozen=True, kw_only=True)
class SaliencyConfig:
    method: str = "gradient"
    target: Literal["predicted", "true"] | int = "predicted"
    layer: str | None = None  # Grad-CAM: a named_modules() path of a conv layer
    n_steps: int = 50  # IG steps; 50 is Captum's default
    baseline: str = "zeros"  # IG and DeepLift: zeros (black), blurred copy of the input, or data mean
    baseline_mean: tuple[float, ...] = ()  # per-channel data mean for baseline="mean"
    noise_level: float = 0.15  # SmoothGrad/VarGrad noise std, in pixel units ([0, 1] images)
    n_samples: int = 20  # SmoothGrad/VarGrad samples per image
    window: int = 4  # Occlusion window side (pixels)
    stride: int = 2  # Occlusion stride
    batch_size: int = 128  # images per chunk: bounds memory, not the answer
    seed: int = 0  # noise of SmoothGrad/VarGrad/random

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidInputError(f"unknown attribution method {self.method!r}; expected one of {METHODS}")
        if self.method == "gradcam" and not self.layer:
            raise InvalidInputError("Grad-CAM needs a layer (a named_modules() path); got none")
        if self.baseline not in BASELINES:
            raise InvalidInputError(f"IG baseline must be one of {BASELINES}; got {self.baseline!r}")
        if self.n_steps < 1 or self.n_samples < 1 or self.batch_size < 1 or self.window < 1 or self.stride < 1:
            raise InvalidInputError(f"steps, samples, batch size, window and stride must be >= 1; got {self}")
        if isinstance(self.target, str) and self.target not in ("predicted", "true"):
            raise InvalidInputError(f"target must be 'predicted', 'true' or a class index; got {self.target!r}")


@dataclass(frozen=True, kw_only=True)
class SaliencyResult:
    attributions: np.ndarray  # (N, C, H, W); Grad-CAM (N, 1, H, W)
    predictions: np.ndarray  # (N,) predicted class
    confidences: np.ndarray  # (N,) softmax probability of the prediction
    targets: np.ndarray  # (N,) the class each map explains
    config: SaliencyConfig
    delta: np.ndarray | None = None  # IG completeness error per image
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    error: str = ""  # this method failed (why); attributions are then empty


def compute_saliency(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: SaliencyConfig,
    progress: Progress = _no_progress,
    offset: int = 0,
) -> SaliencyResult:
    """Predictions, targets and attributions for `images` (N, C, H, W) in [0, 1]. `offset`: the
    position of images[0] in a larger set that is computed in parts (seeded methods draw per position).

    Args:
        model: the classifier; put in eval mode (and left there).
        images: (N, C, H, W) floats in [0, 1].
        labels: (N,) true classes; used where ``config.target`` is "true".
        config: the method and its settings; ``config.target`` picks the class each map explains:
            "predicted" (default), "true" (`labels`) or one class index for every image.
        progress: ``progress(fraction, message)``, called after each chunk of attributions.
        offset: index of images[0] in the whole set (seeded methods' noise is drawn per index).

    Returns:
        A SaliencyResult: attributions (N, C, H, W) (Grad-CAM (N, 1, H, W)), predictions, confidences
        (softmax of the prediction) and targets (N,), and for Integrated Gradients its completeness
        error per image (delta); NumPy arrays.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import compute_saliency, SaliencyConfig
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval()
        >>> images, labels = torch.rand(3, 1, 4, 4), torch.tensor([2, 0, 1])
        >>> res = compute_saliency(net, images, labels, SaliencyConfig(method="gradient", target="true"))
        >>> res.attributions.shape, res.targets.tolist()
        ((3, 1, 4, 4), [2, 0, 1])
        >>> # a linear model's logit gradient is its weight row for the target class
        >>> torch.allclose(torch.from_numpy(res.attributions[0]).flatten(), net[1].weight[2])
        True
    """
    start = time.perf_counter()
    model.eval()
    probs = evaluate(model, images, batch_size=config.batch_size, probabilities=True).probabilities
    assert probs is not None  # asked for with probabilities=True
    pred = probs.argmax(1)
    target = resolve_target(config.target, pred, labels, probs.shape[1])
    attr = attribute(model, images, target, config, progress, offset)
    delta = _ig_delta(model, images, target, attr, config) if config.method == "integrated_gradients" else None
    return SaliencyResult(
        attributions=attr.numpy(),
        predictions=pred.numpy(),
        confidences=probs.max(1).values.numpy(),
        targets=target.numpy(),
        config=config,
        delta=None if delta is None else delta.numpy(),
        seconds=time.perf_counter() - start,
    )


def resolve_target(target, pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    if target == "predicted":
        return pred.clone()
    if target == "true":
        return labels.long().clone()
    if not 0 <= int(target) < num_classes:
        raise InvalidInputError(f"target class must be in [0, {num_classes - 1}]; got {target}")
    return torch.full_like(pred, int(target))


def attribute(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    config: SaliencyConfig,
    progress: Progress = _no_progress,
    offset: int = 0,
) -> torch.Tensor:
    """Attributions in chunks; `target` (N,) is the class each image's map explains. `progress`
    hears after each chunk. Seeded methods (SmoothGrad, VarGrad, random) draw image i's noise from
    its position offset + i, so a set computed in parts equals the set computed whole.

    Args:
        model: the classifier; put in eval mode (and left there).
        images: (N, C, H, W) floats in [0, 1], on any device (each chunk is moved to the model's).
        target: (N,) int64, the class each map explains.
        config: the method (one of METHODS) and its settings; ``config.target`` is not used here.
        progress: ``progress(fraction, message)``, called after each chunk.
        offset: index of images[0] in the whole set (seeded methods' noise is drawn per index).

    Returns:
        (N, C, H, W) attributions on the CPU ((N, 1, H, W) for Grad-CAM, upsampled to the image size).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import attribute, SaliencyConfig
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval()
        >>> images, target = torch.rand(3, 1, 4, 4), torch.tensor([3, 3, 1])
        >>> attr = attribute(net, images, target, SaliencyConfig(method="gradient_x_input"))
        >>> # for a linear model, gradient × input sums to the target logit minus its bias
        >>> logit = net(images).gather(1, target[:, None])[:, 0]
        >>> attr.shape, torch.allclose(attr.flatten(1).sum(1), logit - net[1].bias[target])
        (torch.Size([3, 1, 4, 4]), True)
    """
    model.eval()
    fn, device = _METHOD_FNS[config.method], _device(model)
    if config.method == "gradcam":
        _conv_layer(model, config.layer)
    out = in_chunks(
        len(images),
        config.batch_size,
        lambda start, stop: (
            fn(model, images[start:stop].to(device), target[start:stop].to(device), config, offset + start)
            .detach()
            .cpu()
        ),
        progress,
        "images",
    )
    return torch.cat(out)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _captum():
    import captum.attr as ca  # imported late: Captum is heavy and only needed here

    return ca


def _summed_gradients(forward_fn, inputs, target_ind=None, additional_forward_args=None):
    """Captum's `compute_gradients`, back-propagating the sum of the selected outputs instead of one
    scalar per example (`torch.unbind`), which launches a fill kernel per example: 5-14x the bare
    pass on an H100. The input gradients are the same because the model runs in eval mode, where
    no example's output depends on another's."""
    from captum._utils.common import _run_forward

    with torch.autograd.set_grad_enabled(True):
        outputs = _run_forward(forward_fn, inputs, target_ind, additional_forward_args)
        if outputs[0].numel() != 1:
            raise InvalidInputError(
                f"attributions need one target per example; got outputs of shape {tuple(outputs.shape)}"
            )
        return torch.autograd.grad(outputs.sum(), inputs)


def _fast(attribution):
    """A Captum attribution object that uses `_summed_gradients` (its documented hook:
    GradientAttribution.gradient_func)."""
    attribution.gradient_func = _summed_gradients
    return attribution


def _gradient(model, x, t, cfg, start):
    return _fast(_captum().Saliency(model)).attribute(x.requires_grad_(True), target=t, abs=False)


class _NegLogSoftmax(nn.Module):
    """Outputs -log p, so the gradient of output t is the gradient of CE(f(x), t)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -F.log_softmax(self.model(x), dim=1)


def _loss_gradient(model, x, t, cfg, start):
    return _gradient(_NegLogSoftmax(model), x, t, cfg, start)


def _gradient_x_input(model, x, t, cfg, start):
    return _fast(_captum().InputXGradient(model)).attribute(x.requires_grad_(True), target=t)


def _generator(cfg: SaliencyConfig, index: int) -> torch.Generator:
    """The random stream of one image: fixed by (seed, image index), so it does not depend on how
    the images are chunked or on the device."""
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + index)


def noise_for(cfg: SaliencyConfig, index: int, shape: tuple[int, ...], dtype=torch.float32) -> torch.Tensor:
    """(n_samples, *shape) Gaussian noise of std `noise_level` for the image at `index`."""
    return torch.randn((cfg.n_samples, *shape), generator=_generator(cfg, index), dtype=dtype) * cfg.noise_level


def _noise_tunnel(kind: str, model, x, t, cfg, start):
    """SmoothGrad (mean) or VarGrad (variance) of the gradient over noisy copies, as Captum's
    NoiseTunnel computes them, but with each image's noise drawn from its own seeded generator
    (NoiseTunnel draws from the global RNG, so its maps changed with the chunk size)."""
    b, s = len(x), cfg.n_samples
    noise = torch.stack([noise_for(cfg, start + i, tuple(x.shape[1:]), x.dtype) for i in range(b)])
    noisy = (x.detach()[:, None] + noise.to(x.device)).flatten(0, 1)  # (B·S, C, H, W)
    grads = _gradient(model, noisy, t.repeat_interleave(s), cfg, start).view(b, s, *x.shape[1:])
    mean = grads.mean(1)
    return mean if kind == "smoothgrad" else (grads**2).mean(1) - mean**2


def ig_baseline(x: torch.Tensor, cfg: SaliencyConfig) -> torch.Tensor:
    if cfg.baseline == "blurred":
        from torchvision.transforms.functional import gaussian_blur

        side = max(3, (min(x.shape[-2:]) // 4) | 1)  # an odd kernel about a quarter of the image
        return gaussian_blur(x, [side, side], [side / 3.0, side / 3.0])
    if cfg.baseline == "mean":
        if len(cfg.baseline_mean) != x.shape[1]:
            raise InvalidInputError(f"baseline 'mean' needs {x.shape[1]} channel means; got {cfg.baseline_mean}")
        return torch.tensor(cfg.baseline_mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1).expand_as(x)
    return torch.zeros_like(x)


def _integrated_gradients(model, x, t, cfg, start):
    return _fast(_captum().IntegratedGradients(model)).attribute(
        x, baselines=ig_baseline(x, cfg), target=t, n_steps=cfg.n_steps, internal_batch_size=max(cfg.batch_size, len(x))
    )


def _ig_delta(model, x, target, attr, cfg) -> torch.Tensor:
    """sum(attr) - (f_t(x) - f_t(baseline)), per image: IG's completeness error."""
    device = _device(model)
    with torch.no_grad():
        out = []
        for i in range(0, len(x), cfg.batch_size):
            xb, tb = x[i : i + cfg.batch_size].to(device), target[i : i + cfg.batch_size].to(device)
            f_x = model(xb).gather(1, tb[:, None])[:, 0]
            f_b = model(ig_baseline(xb, cfg)).gather(1, tb[:, None])[:, 0]
            out.append((attr[i : i + len(xb)].flatten(1).sum(1).to(device) - (f_x - f_b)).cpu())
    return torch.cat(out)


def _guided_backprop(model, x, t, cfg, start):
    return _fast(_captum().GuidedBackprop(model)).attribute(x.requires_grad_(True), target=t)


def _deeplift(model, x, t, cfg, start):
    """DeepLift (Rescale rule) against the same reference image as IG (`cfg.baseline`)."""
    net = unshared_activations(model, x[:1])
    return _fast(_captum().DeepLift(net)).attribute(x.requires_grad_(True), baselines=ig_baseline(x, cfg), target=t)


def unshared_activations(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """`model`, or where it calls a module more than once (torchvision's ResNet blocks call `relu`
    twice) an equal network in which every call has a module of its own. Captum's DeepLift keeps a
    nonlinearity's input and output on the module, so a second call overwrites the first's and
    Captum refuses ("ensure that module is being used only once"). The network is traced with
    torch.fx, sharing the model's weights (the model itself is not changed); the model's forward
    pre-hooks (the input normalization) run first, as on the model."""
    calls: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}
    handles = [
        m.register_forward_hook(lambda mod, i, o: calls.__setitem__(names[mod], calls.get(names[mod], 0) + 1))
        for m in model.modules()
        if m is not model and not list(m.children())
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    shared = {name for name, n in calls.items() if n > 1}
    if not shared:
        return model
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - whatever fx cannot follow
        raise InvalidInputError(
            f"DeepLift needs each activation module called once; this model calls "
            f"{sorted(shared)[:4]} more than once and cannot be traced to separate them "
            f"({type(exc).__name__}). Use Integrated Gradients instead."
        ) from None
    seen: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module" and node.target in shared:
            seen[node.target] = k = seen.get(node.target, 0) + 1
            if k > 1:
                copy_name = f"{node.target.replace('.', '_')}__call{k}"
                traced.add_submodule(copy_name, copy.deepcopy(traced.get_submodule(node.target)))
                node.target = copy_name
    traced.recompile()
    return _PreHooked(model, traced).eval()


class _PreHooked(nn.Module):
    """`net` run after `model`'s forward pre-hooks, which a traced copy of `model` does not carry."""

    def __init__(self, model: nn.Module, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self._model = [model]  # not a submodule: its parameters are net's already

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = (x,)
        for hook in self._model[0]._forward_pre_hooks.values():
            args = hook(self._model[0], args) or args
        return self.net(*args)


def _occlusion(model, x, t, cfg, start):
    c = x.shape[1]
    with torch.no_grad():
        return (
            _captum()
            .Occlusion(model)
            .attribute(
                x,
                sliding_window_shapes=(c, cfg.window, cfg.window),
                strides=(c, cfg.stride, cfg.stride),
                target=t,
                baselines=0.0,
                perturbations_per_eval=16,
            )
        )


def _gradcam(model, x, t, cfg, start):
    ca = _captum()
    layer = _conv_layer(model, cfg.layer)
    if _in_token_block(model, cfg.layer):  # tokens (B, T, D) of a vision transformer
        cam = _token_gradcam(model, layer, x, t)
    else:
        cam = ca.LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)  # (B, 1, h, w)
    return ca.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")


def token_grid(tokens: int) -> tuple[int, int]:
    """(prefix tokens, side) of a vision transformer's token sequence: the class (and register)
    tokens come first, the patches after them form a side × side grid.

    Example:
        >>> token_grid(197), token_grid(16)   # ViT-B/16 at 224 px: CLS + 14×14; a 4×4 grid alone
        ((1, 14), (0, 4))
    """
    for prefix in range(0, min(tokens, 9)):
        side = math.isqrt(tokens - prefix)
        if side >= 1 and side * side == tokens - prefix:
            return prefix, side
    raise InvalidInputError(f"{tokens} tokens do not hold a square grid of patches (after up to 8 class tokens)")


def to_feature_map(tokens: torch.Tensor) -> torch.Tensor:
    """(B, T, D) tokens → (B, D, side, side): the class tokens dropped, the patches as a feature map,
    as pytorch-grad-cam's ``reshape_transform`` for vision transformers does."""
    prefix, side = token_grid(tokens.shape[1])
    patches = tokens[:, prefix:, :]
    return patches.reshape(len(tokens), side, side, tokens.shape[2]).permute(0, 3, 1, 2)


def _token_gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Grad-CAM on a transformer layer: Captum's LayerGradCam averages the gradient over every
    dimension after dim 1, which for (B, T, D) tokens would be the wrong one; so the activation and its
    gradient are first reshaped to (B, D, h, w) feature maps (`to_feature_map`), then Grad-CAM's
    formula is applied as Captum applies it: ReLU(Σ_c mean_hw(∂y/∂A_c) · A_c)."""
    from captum._utils.gradient import compute_layer_gradients_and_eval

    grads, evals = compute_layer_gradients_and_eval(model, layer, x, target_ind=t)
    g, a = to_feature_map(grads[0]), to_feature_map(evals[0])
    weights = g.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * a).sum(dim=1, keepdim=True))


def _random(model, x, t, cfg, start):
    """N(0, 1) per coordinate, drawn per image from (seed, image index): independent of chunking."""
    return torch.stack([torch.randn(x.shape[1:], generator=_generator(cfg, start + i)) for i in range(len(x))]).to(
        x.device
    )


# (model, images, target, config, offset of images[0]) -> attributions
_MethodFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, SaliencyConfig, int], torch.Tensor]
_METHOD_FNS: dict[str, _MethodFn] = {
    "gradient": _gradient,
    "loss_gradient": _loss_gradient,
    "gradient_x_input": _gradient_x_input,
    "smoothgrad": partial(_noise_tunnel, "smoothgrad"),
    "vargrad": partial(_noise_tunnel, "vargrad"),
    "integrated_gradients": _integrated_gradients,
    "guided_backprop": _guided_backprop,
    "deeplift": _deeplift,
    "occlusion": _occlusion,
    "gradcam": _gradcam,
    "random": _random,
}


def conv_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def gradcam_layers(model: nn.Module) -> list[str]:
    """The layers Grad-CAM can explain: every convolution and, in a vision transformer, the LayerNorms of
    its blocks, whose (B, T, D) tokens are read as a feature map (`to_feature_map`).

    Example:
        >>> from torch import nn
        >>> from lenscape.analysis.saliency import gradcam_layers
        >>> gradcam_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten()))
        ['0']
    """
    blocks = _token_blocks(model)
    tokens = (
        [n for n, m in model.named_modules() if n.startswith(f"{blocks}.") and isinstance(m, nn.LayerNorm)]
        if blocks
        else []
    )
    return conv_layers(model) + tokens


def gradcam_map_sizes(model: nn.Module, in_shape: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """{layer of `gradcam_layers`: (h, w) of the map Grad-CAM makes there} for one input of shape (C, H, W):
    a convolution's output size, or a transformer block's grid of patches."""
    sizes: dict[str, tuple[int, int]] = {}

    def seen(name: str, out: torch.Tensor) -> None:
        if out.dim() == 3:  # tokens: a square grid of patches after the class tokens, else no map here
            try:
                side = token_grid(out.shape[1])[1]
            except InvalidInputError:
                return
            sizes[name] = (side, side)
        else:
            sizes[name] = tuple(out.shape[-2:])  # type: ignore[assignment]

    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen(n, o)) for n in gradcam_layers(model)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *in_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return sizes


def conv_output_sizes(model: nn.Module, in_shape: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """{conv layer: (h, w) of its output} for one input of shape (C, H, W)."""
    convs = set(conv_layers(model))
    return {n: hw for n, hw in gradcam_map_sizes(model, in_shape).items() if n in convs}


def suggest_gradcam_layer(model: nn.Module, in_shape: tuple[int, ...] | None = None) -> str:
    """The last convolutional layer, which is what Grad-CAM usually explains; with `in_shape`, the last
    whose output is at least 2×2 (a 1×1 map, as ResNet-18's layer4 gives on 32-px images, is one value
    per image: a blank map).

    Args:
        model: the network; it must have an ``nn.Conv2d`` (an MLP is refused with InvalidInputError).
        in_shape: (C, H, W) of one input image, or None to take the last convolution whatever its size.

    Returns:
        The ``named_modules()`` path of the layer, for ``SaliencyConfig(method="gradcam", layer=...)``.

    Example:
        >>> from torch import nn
        >>> from lenscape.analysis import suggest_gradcam_layer
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
        ...                     nn.Conv2d(4, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> suggest_gradcam_layer(net), suggest_gradcam_layer(net, (1, 8, 8))   # "3" sees 2×2 maps
        ('3', '3')
        >>> suggest_gradcam_layer(net, (1, 4, 4))   # on 4×4 images "3" sees 1×1: the first conv instead
        '0'
    """
    token_layer = _token_gradcam_layer(model)
    if token_layer:
        return token_layer
    convs = conv_layers(model)
    if not convs:
        raise InvalidInputError("Grad-CAM does not apply: this model has no convolutional layer (an MLP?)")
    if in_shape is not None:
        sizes = conv_output_sizes(model, in_shape)
        spatial = [n for n in convs if min(sizes.get(n, (0, 0))) >= 2]
        if spatial:
            return spatial[-1]
    return convs[-1]


def _token_blocks(model: nn.Module) -> str | None:
    """The stack of transformer blocks (blocks with a LayerNorm and attention), if the model has one."""
    from lenscape.analysis.activations import block_container

    name = block_container(model)
    if name is None:
        return None
    first = next(dict(model.named_modules())[name].children())
    kinds = {type(m) for m in first.modules() if m is not first}  # what the block is made of
    # global attention over a (B, T, D) sequence: torch's nn.MultiheadAttention (torchvision's ViT, yours) or
    # timm's ViT-family `Attention`, with a LayerNorm (timm's is a subclass). Windowed or 2-D attention
    # (Swin's WindowAttention, MaxViT's) works on 4-D maps: those models keep their convolutions.
    attention = nn.MultiheadAttention in kinds or any(k.__name__ == "Attention" for k in kinds)
    return name if attention and any(issubclass(k, nn.LayerNorm) for k in kinds) else None


def _in_token_block(model: nn.Module, name: str | None) -> bool:
    blocks = _token_blocks(model)
    return bool(blocks and name and name.startswith(f"{blocks}."))


def _token_gradcam_layer(model: nn.Module) -> str | None:
    """For a vision transformer, the first LayerNorm of its last block: its tokens still feed the
    attention that mixes them into the class token (the last block's output reaches the logits through
    the class token alone, so the patches' gradient there is zero), as pytorch-grad-cam advises."""
    blocks = _token_blocks(model)
    if blocks is None:
        return None
    last = list(dict(model.named_modules())[blocks].named_children())[-1][0]
    block = dict(model.named_modules())[f"{blocks}.{last}"]
    norm = next(n for n, m in block.named_modules() if isinstance(m, nn.LayerNorm))
    return f"{blocks}.{last}.{norm}"


def _conv_layer(model: nn.Module, name: str | None) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        raise InvalidInputError(f"unknown layer {name!r}; convolutional layers: {conv_layers(model) or 'none'}")
    if _in_token_block(model, name):
        return modules[name]
    if not isinstance(modules[name], nn.Conv2d) and not any(isinstance(m, nn.Conv2d) for m in modules[name].modules()):
        raise InvalidInputError(
            f"layer {name!r} is a {type(modules[name]).__name__}, not a convolutional layer; "
            f"Grad-CAM needs a (B, C, H, W) activation. Try {conv_layers(model)[-1:] or 'none'}"
        )
    return modules[name]


def to_map(attr: torch.Tensor | np.ndarray, mode: Literal["signed", "abs"] = "abs") -> torch.Tensor:
    """(N, C, H, W) → (N, H, W): channels summed, signed or as absolute values.

    Args:
        attr: (N, C, H, W) attributions, array or tensor.
        mode: "abs" (default: the sum of the channels' absolute values) or "signed" (the plain sum).

    Returns:
        An (N, H, W) tensor.

    Example:
        >>> import torch
        >>> from lenscape.analysis import to_map
        >>> attr = torch.tensor([[[[1.0, -2.0]], [[3.0, 1.0]]]])    # (1, 2, 1, 2): two channels
        >>> to_map(attr), to_map(attr, "signed")                      # |1| + |3|, |-2| + |1|; 1 + 3, -2 + 1
        (tensor([[[4., 3.]]]), tensor([[[ 4., -1.]]]))
    """
    a = torch.as_tensor(attr)
    return a.abs().sum(1) if mode == "abs" else a.sum(1)


def null_mass_at_k(attr: torch.Tensor | np.ndarray, null_mask: torch.Tensor, k: float) -> torch.Tensor:
    """Share of the top-k |attribution| mass (k a fraction of the C·H·W coordinates, ranked per
    coordinate as the paper's code does) that lies in the null block. Ties at the k-th value are
    shared out evenly, so a uniform map gives exactly the null block's share. (N,)

    Args:
        attr: (N, C, H, W) attributions, array or tensor; only |attr| counts.
        null_mask: (N, 1, H, W) or (N, C, H, W) bool, True on each image's null block.
        k: the fraction of the C·H·W coordinates that counts as the top (at least one coordinate).

    Returns:
        (N,) float32 in [0, 1]: the share of each image's top-k mass in the null block (0 for an all-zero map).

    Example:
        >>> import torch
        >>> from lenscape.analysis import null_mass_at_k
        >>> null = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
        >>> null[:, :, 2:] = True                                     # the bottom half carries no signal
        >>> uniform = torch.ones(2, 1, 4, 4)
        >>> null_mass_at_k(uniform, null, 0.1)                        # ties shared: the null block's share
        tensor([0.5000, 0.5000])
        >>> top_only = uniform.masked_fill(null, 0.0)
        >>> null_mass_at_k(top_only, null, 0.25)                      # a map that ignores the null block
        tensor([0., 0.])
    """
    full = torch.as_tensor(attr)
    a = full.abs().flatten(1).double()  # (N, D)
    null = null_mask.to(full.device).expand_as(full).flatten(1).double()
    kk = max(1, int(round(k * a.shape[1])))
    t = a.topk(kk, dim=1).values[:, -1:]  # (N, 1) the k-th largest value
    above, tied = (a > t).double(), (a == t).double()
    rest = kk - above.sum(1)  # how many tied coordinates get in
    num = (a * above * null).sum(1) + rest * t[:, 0] * (tied * null).sum(1) / tied.sum(1)
    den = (a * above).sum(1) + rest * t[:, 0]
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(den)).float()


@dataclass(frozen=True, kw_only=True)
class NullMass:
    methods: list[str]
    k_grid: np.ndarray  # (K,)
    mass: np.ndarray  # (methods, K, N): each image's top-k attribution mass in the null block
    null_share: float  # the null block's share of the coordinates: what a uniform map scores
    examples: np.ndarray  # (methods, E, C, H, W): the first images' attributions


def null_mass(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    null_mask: torch.Tensor,
    methods: Sequence[SaliencyConfig],
    k_grid: Sequence[float] = (0.01, 0.05, 0.1, 0.2),
    *,
    n_examples: int = 4,
    progress: Progress = _no_progress,
) -> NullMass:
    """BlockMNIST's trust check (Shah et al. 2021): how much of each map's top-k mass lies in the block
    that carries no signal. A faithful map of a model that ignores the null block scores near 0.

    Args:
        model: the classifier.
        images: (N, C, H, W) in [0, 1] (or uint8); labels: (N,) true classes.
        null_mask: (N, 1, H, W) or (N, C, H, W) bool, True on each image's null block.
        methods: one SaliencyConfig per attribution method.
        k_grid: fractions of the C·H·W coordinates that count as the top.

    Returns:
        A NullMass with the per-image masses (methods, K, N).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> with torch.no_grad():
        ...     _ = net[1].weight.zero_().index_fill_(1, torch.arange(8), 1.0)   # reads only the top half
        >>> x, y = torch.rand(3, 1, 4, 4), torch.zeros(3, dtype=torch.long)
        >>> bottom = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
        >>> bottom[:, :, 2:] = True
        >>> res = null_mass(net, x, y, bottom, [SaliencyConfig(method="gradient", target="true")], k_grid=(0.5,))
        >>> res.mass.shape, float(res.mass.max()), res.null_share
        ((1, 1, 3), 0.0, 0.5)
    """
    mask = null_mask.bool()
    images = images.float().div(255.0) if images.dtype == torch.uint8 else images
    masses, examples = [], []
    for j, m in enumerate(methods):
        progress(j / max(1, len(methods)), m.method)
        attr = torch.from_numpy(compute_saliency(model, images, labels, m).attributions)
        masses.append(torch.stack([null_mass_at_k(attr, mask, k) for k in k_grid]).numpy())
        examples.append(attr[:n_examples].numpy())
    progress(1.0, "done")
    return NullMass(
        methods=[m.method for m in methods],
        k_grid=np.array(k_grid, dtype=float),
        mass=np.array(masses),
        null_share=float(mask[:1].expand(1, *images.shape[1:]).float().mean()),
        examples=np.array(examples),
    )
