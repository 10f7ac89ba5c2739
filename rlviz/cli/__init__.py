"""The ``rlviz`` command. Each subcommand lives in its own module of this package with
``main(argv) -> int`` and is imported only when called, so ``rlviz --help`` stays fast and
``import rlviz.cli`` never pulls in the environment or the trainer.

This package is the only part of rlviz that imports the application (``rlviz.envs``, ``rlviz.agents``); what
the commands share (options, :class:`~rlviz.cli.common.CliError`, the checkpoint loader) is in
:mod:`rlviz.cli.common`.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module:function under rlviz.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train:main", "train a PPO agent on a BoxReach env"),
    "evaluate": ("evaluate:main", "success rate and steps of a checkpoint on held-out seeds"),
    "sweep": (
        "sweep:main",
        "metrics of every snapshot of a run vs training steps (serial or on Ray)",
    ),
    "video": ("video:main", "render annotated explanation videos of a checkpoint"),
    "explore": ("explore:main", "interactive HTML report (explorer) of a checkpoint's episodes"),
    "tsne": ("tsne:main", "t-SNE / PCA map of the states an agent visits"),
    "trust": (
        "trust:main",
        "which attribution map to trust: sanity checks, deletion/insertion, ground truth",
    ),
    "filters": ("features:filters_main", "first-layer kernels and per-layer filter grids"),
    "featvis": (
        "features:featvis_main",
        "activation maximisation: what image drives a unit/action",
    ),
    "topk": ("features:topk_main", "top-activating states and receptive-field patches of a unit"),
    "dissect": ("features:dissect_main", "unit-vs-goal-box IoU (network dissection) and ablation"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: rlviz COMMAND [options]   (rlviz COMMAND --help for its options)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from rlviz import __version__

        print(f"rlviz {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rlviz: error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    try:
        command = getattr(importlib.import_module(f"rlviz.cli.{module_name}"), func_name)
    except (ImportError, AttributeError) as exc:
        print(f"rlviz {name}: error: not available in this install ({exc})", file=sys.stderr)
        return 2
    try:
        return int(command(rest) or 0)
    except KeyboardInterrupt:
        print(f"\nrlviz {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
