"""Activation maximisation from composable pieces: objectives, parameterisations, transforms.

Example::

    from rlviz.features import optvis

    obj = optvis.channel("conv2", 5) - 1e-2 * optvis.total_variation()
    vis = optvis.optimize(adapter, obj, param=optvis.fourier((60, 80)), steps=256, seed=0)
    vis.image  # uint8 [60, 80, 3]
"""

from rlviz.features.optvis.objectives import (
    Context,
    Objective,
    action_log_prob,
    action_logit,
    action_prob,
    blur,
    channel,
    dream,
    feature_distance,
    gaussian_blur,
    l2,
    neuron,
    total_variation,
    value,
)
from rlviz.features.optvis.optimize import (
    Adam,
    Visualisation,
    evaluate,
    optimize,
    plot_visualisations,
)
from rlviz.features.optvis.param import (
    FourierImage,
    ImageParam,
    PixelImage,
    color_correlation,
    fourier,
    pixels,
)
from rlviz.features.optvis.stack import StackImage, stack
from rlviz.features.optvis.texture import (
    TextureResult,
    content,
    gram,
    gram_direction,
    gram_distance,
    gram_matrix,
    layer_targets,
    style,
    style_loss,
    style_transfer,
    synthesize_texture,
)
from rlviz.features.optvis.texture_plots import plot_style_transfer, plot_textures
from rlviz.features.optvis.transforms import (
    compose,
    jitter,
    random_rotate,
    random_scale,
    standard_transforms,
)

__all__ = [
    "Adam",
    "Context",
    "FourierImage",
    "ImageParam",
    "Objective",
    "StackImage",
    "PixelImage",
    "TextureResult",
    "Visualisation",
    "action_log_prob",
    "action_logit",
    "action_prob",
    "blur",
    "channel",
    "color_correlation",
    "compose",
    "content",
    "dream",
    "evaluate",
    "feature_distance",
    "fourier",
    "gaussian_blur",
    "gram",
    "gram_direction",
    "gram_distance",
    "gram_matrix",
    "jitter",
    "l2",
    "layer_targets",
    "neuron",
    "optimize",
    "pixels",
    "plot_style_transfer",
    "plot_textures",
    "plot_visualisations",
    "random_rotate",
    "random_scale",
    "stack",
    "standard_transforms",
    "style",
    "style_loss",
    "style_transfer",
    "synthesize_texture",
    "total_variation",
    "value",
]
