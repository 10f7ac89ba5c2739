"""Inside the network: what the layers of a policy CNN compute and which of it matters.

One concept per module, all working on any model through :class:`rlviz.PolicyAdapter` and dotted
layer names:

* :mod:`~rlviz.features.filters` learned kernels as tiles / grids; hand kernels for comparison.
* :mod:`~rlviz.features.featmaps` every channel of a layer for one frame.
* :mod:`~rlviz.features.optvis` activation maximisation (objectives, parameterisations, transforms).
* :mod:`~rlviz.features.topk` top-activating states with receptive-field patches.
* :mod:`~rlviz.features.neighbours` nearest frames in a layer's feature space.
* :mod:`~rlviz.features.dissection` unit-vs-goal-box IoU (network dissection).
* :mod:`~rlviz.features.ablation` switch units off; success rate and action change.
* :mod:`~rlviz.features.deepdream`, :mod:`~rlviz.features.inversion`,
  :mod:`~rlviz.features.adversarial`.
"""

from rlviz.features import optvis
from rlviz.features._common import play_episodes
from rlviz.features.ablation import (
    AblationStudy,
    ActionChange,
    SuccessRate,
    ablate,
    ablation_study,
    action_change,
    plot_ablation,
    random_units_like,
    success_rate,
)
from rlviz.features.adversarial import (
    Adversarial,
    minimal_perturbation,
    plot_adversarial_example,
    plot_epsilon_histogram,
)
from rlviz.features.deepdream import Dream, deepdream, plot_dreams
from rlviz.features.dissection import (
    DEFAULT_IOU_THRESHOLD,
    Dissection,
    UnitScore,
    dissect,
    plot_dissection,
    unit_segmentation,
    upsample_maps,
)
from rlviz.features.featmaps import feature_maps, plot_feature_maps
from rlviz.features.filters import (
    HAND_KERNELS,
    apply_kernels,
    filter_grid,
    frame_filters,
    plot_filter_grid,
    plot_frame_filters,
    plot_kernel_comparison,
    plot_rgb_filters,
    rgb_filters,
)
from rlviz.features.inversion import Inversion, invert, plot_inversions
from rlviz.features.neighbours import (
    Neighbours,
    nearest_neighbours,
    pixel_neighbours,
    plot_neighbours,
)
from rlviz.features.topk import (
    ReceptiveField,
    TopExamples,
    plot_top_k,
    receptive_field,
    receptive_fields,
    top_k_examples,
)
from rlviz.statemap.dataset import layer_features  # the one definition: state maps' too

__all__ = [
    "DEFAULT_IOU_THRESHOLD",
    "HAND_KERNELS",
    "AblationStudy",
    "ActionChange",
    "Adversarial",
    "Dissection",
    "Dream",
    "Inversion",
    "Neighbours",
    "ReceptiveField",
    "SuccessRate",
    "TopExamples",
    "UnitScore",
    "ablate",
    "ablation_study",
    "action_change",
    "apply_kernels",
    "deepdream",
    "dissect",
    "feature_maps",
    "filter_grid",
    "frame_filters",
    "invert",
    "layer_features",
    "minimal_perturbation",
    "nearest_neighbours",
    "optvis",
    "pixel_neighbours",
    "play_episodes",
    "plot_ablation",
    "plot_adversarial_example",
    "plot_dissection",
    "plot_dreams",
    "plot_epsilon_histogram",
    "plot_feature_maps",
    "plot_filter_grid",
    "plot_frame_filters",
    "plot_inversions",
    "plot_kernel_comparison",
    "plot_neighbours",
    "plot_rgb_filters",
    "plot_top_k",
    "random_units_like",
    "receptive_field",
    "receptive_fields",
    "rgb_filters",
    "success_rate",
    "top_k_examples",
    "unit_segmentation",
    "upsample_maps",
]
