"""Envs as the frameworks hand them, as the one kind rlviz plays: a Gymnasium-style env with image
observations.

:func:`as_gym_env` takes a Gymnasium env as it is, a one-env Stable-Baselines3 ``VecEnv`` (what
the SB3 callback and ``make_atari_env`` give) through a thin adapter, and picks the image of a
``Dict`` observation by ``obs_key``; anything else gets one line saying how to get a Gymnasium env.
rlviz imports neither Gymnasium nor SB3 here (duck typing).
"""

from __future__ import annotations

import numpy as np

from rlviz.layout import LayoutError, ObservationLayout

_HOW = (
    "pass a Gymnasium env (gymnasium.make(id, render_mode='rgb_array')) or a one-env SB3 VecEnv; "
    "TorchRL, RLlib, Tianshou and skrl all wrap Gymnasium envs, so make the same id with "
    "gymnasium.make and its wrappers"
)


def _image_keys(space) -> list[str]:
    return [
        key
        for key, sub in space.spaces.items()
        if getattr(sub, "shape", None) is not None and len(sub.shape) in (2, 3, 4)
    ]


class OneEnv:
    """A one-env SB3 ``VecEnv`` as a Gymnasium-style env (``reset(seed=)`` -> (obs, info),
    ``step(a)`` -> (obs, reward, terminated, truncated, info)), unbatched.

    A VecEnv resets itself when an episode ends; the last observation it returns then is the
    next episode's first, so ``step`` hands back ``info["terminal_observation"]`` instead.
    ``observation_layout`` is read off the VecEnv chain (``VecFrameStack``). ``owns``: ``close``
    closes the VecEnv too (it was made for rlviz, e.g. by the SB3 callback from a factory).
    """

    def __init__(self, venv, owns: bool = False) -> None:
        self.venv = venv
        self.owns = bool(owns)
        self.observation_space = venv.observation_space
        self.action_space = venv.action_space
        self.metadata = getattr(venv, "metadata", {})
        try:
            layout = ObservationLayout.from_vec_env(venv)
        except LayoutError:
            layout = None  # a shape that needs declaring: the policy's layout says
        self.observation_layout = layout if layout is not None and layout.stacked else None
        inner = getattr(venv, "envs", None)
        self.unwrapped = inner[0].unwrapped if inner else self

    def reset(self, *, seed: int | None = None, options=None):
        if seed is not None:
            self.venv.seed(int(seed))
        obs = self.venv.reset()
        infos = getattr(self.venv, "reset_infos", None) or [{}]
        return obs[0], dict(infos[0])

    def step(self, action):
        obs, rewards, dones, infos = self.venv.step(np.asarray([action]))
        info = dict(infos[0])
        done = bool(dones[0])
        truncated = done and bool(info.get("TimeLimit.truncated", False))
        first = info.get("terminal_observation", obs[0]) if done else obs[0]
        return first, float(rewards[0]), done and not truncated, truncated, info

    def render(self):
        return self.venv.render()

    def get_action_meanings(self) -> list[str]:
        """The inner env's action meanings (Atari), or [] when it has none."""
        try:
            return list(self.venv.env_method("get_action_meanings", indices=[0])[0])
        except (AttributeError, TypeError):
            return []

    def close(self) -> None:
        """Closes the VecEnv when it ``owns`` it; otherwise it is the caller's: left open."""
        if self.owns:
            self.venv.close()


class PickKey:
    """An env whose ``Dict`` observations are replaced by their image ``key`` (the rest stays in
    ``info["obs"]`` for the panels that want it)."""

    def __init__(self, env, key: str) -> None:
        self.env = env
        self.key = key
        self.observation_space = env.observation_space.spaces[key]
        self.action_space = env.action_space
        self.metadata = getattr(env, "metadata", {})
        self.unwrapped = getattr(env, "unwrapped", env)
        self.spec = getattr(env, "spec", None)

    def _split(self, obs, info):
        return obs[self.key], {**info, "obs": {k: v for k, v in obs.items() if k != self.key}}

    def reset(self, *, seed: int | None = None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._split(obs, info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._split(obs, info)
        return obs, reward, terminated, truncated, info

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def as_gym_env(env, obs_key: str | None = None, what: str = "rlviz", owns: bool = False):
    """``env`` as a Gymnasium-style env with image observations (see the module docstring);
    ``owns``: a VecEnv is closed with it (see :class:`OneEnv`).

    Raises one line for a VecEnv of several envs, an env of another kind, a ``Dict`` observation
    without ``obs_key`` (naming its image keys) and ``obs_key`` without a ``Dict`` observation.
    """
    if all(hasattr(env, name) for name in ("num_envs", "step_async", "step_wait")):  # a VecEnv
        if int(env.num_envs) != 1:
            raise ValueError(
                f"{what} plays one env; got a VecEnv of {env.num_envs}. Pass a one-env VecEnv "
                "(e.g. make_atari_env(id, n_envs=1)) or a Gymnasium env"
            )
        env = OneEnv(env, owns=owns)
    needed = ("reset", "step", "observation_space", "action_space")
    missing = next((n for n in needed if not hasattr(env, n)), None)
    if missing is not None:
        kind = type(env).__name__
        raise TypeError(f"{what} cannot play a {kind} (it has no {missing}); {_HOW}")
    space = env.observation_space
    if type(space).__name__ == "Dict":
        images = _image_keys(space)
        if obs_key is None:
            raise ValueError(
                f"{what}: the observations are a dict with keys {list(space.spaces)}; name the "
                f"image with obs_key= (image-shaped: {images or 'none'})"
            )
        if obs_key not in space.spaces:
            raise ValueError(
                f"{what}: obs_key={obs_key!r} is not a key of the observations {list(space.spaces)}"
            )
        return PickKey(env, obs_key)
    if obs_key is not None:
        raise ValueError(
            f"{what}: obs_key={obs_key!r} given, but the observations are not a dict ({space})"
        )
    return env
