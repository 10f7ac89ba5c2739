"""Box-reaching MiniWorld tasks for rlviz, registered with Gymnasium.

Importing this package only registers ids (string entry points): it does not import miniworld,
pyglet or OpenGL. The simulator starts when an environment is made::

    import gymnasium as gym
    from rlviz import envs

    env = gym.make("rlviz/BoxReach-v0")                      # default task
    env = gym.make("rlviz/BoxReach-v0", ground_truth=True)   # + masks and poses in info

Ids (all are :class:`rlviz.envs.boxreach.BoxReachEnv` with different keyword arguments):

* ``rlviz/BoxReach-v0``        12x12 room, red goal box + 3 distractor boxes, 250 steps.
* ``rlviz/BoxReachSingle-v0``  same room, no distractors.
* ``rlviz/BoxReachFast-v0``    bigger steps (0.7 m, 45 deg), 80 steps.
* ``rlviz/BoxReachRandom-v0``  domain randomisation (textures, lighting, colours, camera).
* ``rlviz/BoxReachSmall-v0``   6x6 room, 1 distractor, 100 steps (quick experiments, tests).
"""

from __future__ import annotations

import gymnasium as gym

from rlviz.envs.headless import HeadlessGLError, prepare, quiet

__all__ = ["ACTION_NAMES", "ENV_IDS", "HeadlessGLError", "prepare", "quiet"]

#: Names of the Discrete(3) actions, by index.
ACTION_NAMES: tuple[str, ...] = ("left", "forward", "right")

_ENTRY_POINT = "rlviz.envs.boxreach:BoxReachEnv"

#: Registered ids -> the keyword arguments they pass to ``BoxReachEnv``.
ENV_IDS: dict[str, dict] = {
    "rlviz/BoxReach-v0": {},
    "rlviz/BoxReachSingle-v0": {"num_distractors": 0},
    "rlviz/BoxReachFast-v0": {"fast": True},
    "rlviz/BoxReachRandom-v0": {"domain_rand": True},
    "rlviz/BoxReachSmall-v0": {"size": 6, "num_distractors": 1, "max_episode_steps": 100},
}

for _id, _kwargs in ENV_IDS.items():
    if _id not in gym.registry:
        # No max_episode_steps here: the env truncates itself (MiniWorld's reward uses the limit).
        gym.register(id=_id, entry_point=_ENTRY_POINT, kwargs=dict(_kwargs))
