"""``rlviz filters | featvis | topk | dissect``: look inside a checkpoint's network.

Examples::

    rlviz filters --checkpoint agents/checkpoints/boxreach.safetensors --out videos/features
    rlviz featvis --objective action:left --objective channel:conv3:5 --steps 256
    rlviz featvis --method deepdream --layers conv2 conv3
    rlviz featvis --method invert --layers conv1 conv2 conv3
    rlviz featvis --method adversarial --episodes 2
    rlviz topk --layer conv3 --units 0 5 7 --k 8 --neighbours
    rlviz dissect --episodes 10 --ablate 5 --ablate-episodes 30

Every command plays the checkpoint in its env (``--env``, default the one it was trained on) to
get observations, and writes PNG figures (plus JSON for ``dissect``) into ``--out``.
"""

from rlviz.cli.features.common import DEFAULT_OUT, collect_dataset, pick_frame, showcase_index
from rlviz.cli.features.dissect import dissect_main
from rlviz.cli.features.featvis import featvis_main, parse_objective
from rlviz.cli.features.filters import filters_main
from rlviz.cli.features.topk import topk_main

__all__ = [
    "DEFAULT_OUT",
    "collect_dataset",
    "dissect_main",
    "featvis_main",
    "filters_main",
    "parse_objective",
    "pick_frame",
    "showcase_index",
    "topk_main",
]
