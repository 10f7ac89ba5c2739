"""Room textures for BoxReach: the defaults, a palette to re-texture from, and texture images.

The room's layout (boxes, agent) comes from the reset seed; its textures come from here, chosen by
a separate ``texture_seed`` or named per surface, so one layout can be rendered under many
textures. This module reads texture files without importing miniworld (no OpenGL)::

    env.reset(seed=3, options={"texture_seed": 7})                 # same layout, new floor/walls/ceiling
    env.reset(seed=3, options={"textures": {"floor": "grass"}})    # only the floor changes
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

#: The surfaces of a BoxReach room that carry a texture.
SURFACES: tuple[str, ...] = ("floor", "wall", "ceiling")

#: MiniWorld's own room textures (``Room`` defaults), the ones BoxReach always used.
DEFAULT_TEXTURES: dict[str, str] = {
    "floor": "floor_tiles_bw",
    "wall": "concrete",
    "ceiling": "concrete_tiles",
}

#: Textures a surface may be given (MiniWorld texture names, file ``NAME_1.png``). Strongly red
#: textures (lava, red doors) are left out so that re-texturing never paints a second "goal".
PALETTE: dict[str, tuple[str, ...]] = {
    "floor": (
        "floor_tiles_bw",
        "asphalt",
        "grass",
        "marble",
        "wood",
        "wood_planks",
        "cardboard",
        "rock",
        "concrete_tiles",
    ),
    "wall": (
        "concrete",
        "brick_wall",
        "cinder_blocks",
        "drywall",
        "stucco",
        "wood_planks",
        "marble",
        "metal_grill",
        "airduct_grate",
    ),
    "ceiling": ("concrete_tiles", "ceiling_tiles", "ceiling_tile_noborder", "white", "drywall"),
}

# MiniWorld's keyword argument (add_rect_room) for each surface.
ROOM_KWARGS: dict[str, str] = {"floor": "floor_tex", "wall": "wall_tex", "ceiling": "ceil_tex"}


def _texture_dir() -> Path:
    spec = importlib.util.find_spec("miniworld")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "miniworld is not installed; install the env extra (pip install -e '.[env]')"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "textures"


def texture_path(name: str, variant: int = 1) -> Path:
    """The PNG file of MiniWorld texture ``name`` (variant 1 is the one used without domain rand)."""
    path = _texture_dir() / f"{name}_{variant}.png"
    if not path.exists():
        known = sorted({n for names in PALETTE.values() for n in names})
        raise ValueError(f"no texture {name!r} (variant {variant}) at {path}; known: {known}")
    return path


def texture_image(name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Texture ``name`` as uint8 RGB [H, W, 3], resized to ``size`` (H, W) if given.

    A style target for style transfer: the pattern the env paints on a surface, without rendering.
    """
    from PIL import Image

    img = Image.open(texture_path(name)).convert("RGB")
    if size is not None:
        img = img.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def sample_textures(
    seed: int, surfaces: Iterable[str] = SURFACES, *, exclude_default: bool = True
) -> dict[str, str]:
    """Textures for every surface: ``surfaces`` drawn from :data:`PALETTE` with ``seed``, the
    others at :data:`DEFAULT_TEXTURES`. ``exclude_default`` makes every drawn surface change."""
    surfaces = list(surfaces)
    unknown = sorted(set(surfaces) - set(SURFACES))
    if unknown:
        raise ValueError(f"unknown surfaces {unknown}; expected some of {SURFACES}")
    rng = np.random.default_rng(int(seed))
    textures = dict(DEFAULT_TEXTURES)
    for surface in SURFACES:  # a fixed order, so one seed gives one choice per surface
        options = [
            n for n in PALETTE[surface] if not (exclude_default and n == DEFAULT_TEXTURES[surface])
        ]
        pick = options[int(rng.integers(len(options)))]
        if surface in surfaces:
            textures[surface] = pick
    return textures


def room_textures(options: Mapping | None) -> dict[str, str]:
    """The room's textures for a reset with ``options`` (None: the defaults).

    ``options["texture_seed"]`` (int) draws every surface from :data:`PALETTE`;
    ``options["textures"]`` ({surface: name}) sets surfaces by name and wins over the seed.
    """
    textures = dict(DEFAULT_TEXTURES)
    if not options:
        return textures
    seed = options.get("texture_seed")
    if seed is not None:
        textures = sample_textures(int(seed))
    named = options.get("textures") or {}
    if not isinstance(named, Mapping):
        raise ValueError(
            f"options['textures'] must be a dict surface -> texture name, got {type(named).__name__}"
        )
    for surface, name in named.items():
        if surface not in SURFACES:
            raise ValueError(
                f"options['textures'] has surface {surface!r}; expected some of {SURFACES}"
            )
        texture_path(name)  # fail here with the list of names, not deep inside MiniWorld
        textures[surface] = name
    return textures
