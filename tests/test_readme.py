"""The README's Python code blocks run as written, against tiny real objects.

Each block runs in a fresh interpreter: in this process other tests may already have imported
submodules (``rlviz.wrappers``), which would hide a README line that works only by accident.
The blocks' free names (``model``, ``sb3_model``, ``agent``, ``frames``, ``actions``, ``env``,
``policy``) are bound to tiny models from ``helpers`` on ColourPatchEnv's 64x64 RGB frames, and the
working directory is a temporary folder, so ``videos/...`` outputs land there.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[tuple[int, str]]:
    """(first code line number, code) of every fenced ```python block in the README."""
    text = README.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


BLOCKS = python_blocks()
IDS = [f"README.md:{line}" for line, _ in BLOCKS]

# Runs in the child: binds the README's free names, executes one block with README line numbers
# (so a traceback points at the README line), then plays one episode of a wrapped env.
RUNNER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    import torch
    import rlviz
    from helpers import CleanRLAtariAgent, ColourPatchEnv, TinyActorCritic, sb3_model

    torch.manual_seed(0)
    env = ColourPatchEnv()
    frames = np.stack([env.reset(seed=s)[0] for s in range(4)])
    agent = CleanRLAtariAgent()
    agent.get_value(torch.zeros(1, 3, 64, 64))  # materialise its LazyLinear at this frame size
    model = TinyActorCritic()
    namespace = {{
        "model": model,
        "sb3_model": sb3_model("PPO"),
        "agent": agent,
        "frames": frames,
        "actions": np.array([0, 1, 2, 1]),
        "env": env,
        "policy": rlviz.PolicyAdapter(model),
    }}
    readme, line = {readme!r}, {line}
    code = open(readme).read().split(chr(10))[line - 1 : line - 1 + {n_lines}]
    exec(compile(chr(10) * (line - 1) + chr(10).join(code), readme, "exec"), namespace)
    wrapped = namespace["env"]
    if wrapped is not env:  # the block wrapped the env: it must still play and close
        wrapped.reset(seed=0)
        done = False
        while not done:
            _, _, terminated, truncated, _ = wrapped.step(1)
            done = terminated or truncated
        wrapped.close()
    print("ran")
    """
)


def rlviz_attribute_chains(code: str) -> list[str]:
    """Every longest ``rlviz.a.b...`` attribute chain the code reads, in source order."""
    chains = []
    for node in ast.walk(ast.parse(code)):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "rlviz" and parts:
            chains.append(".".join(["rlviz", *reversed(parts)]))
    # ast.walk also visits `rlviz.a` inside `rlviz.a.b`: keep only the longest of each
    return [c for c in dict.fromkeys(chains) if not any(o.startswith(c + ".") for o in chains)]


def test_readme_has_python_blocks():
    assert BLOCKS, "README.md has no ```python block; this test expects the API examples there"


def test_readme_attributes_exist_after_import_rlviz():
    # `import rlviz; rlviz.x.y` must work without importing rlviz.x first, in a fresh interpreter.
    chains = {c: line for line, code in BLOCKS for c in rlviz_attribute_chains(code)}
    script = textwrap.dedent(
        f"""
        import functools, rlviz
        missing = []
        for chain in {list(chains)!r}:
            try:
                functools.reduce(getattr, chain.split(".")[1:], rlviz)
            except AttributeError as error:
                missing.append(f"{{chain}}: {{error}}")
        print("\\n".join(missing))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    missing = [m for m in result.stdout.splitlines() if m]
    assert not missing, (
        "after a plain `import rlviz` these README names do not resolve:\n"
        + "".join(f"  README.md:{chains[m.split(':')[0]]}: {m}\n" for m in missing)
        + "Make them attributes of the package (lazily, if importing them is heavy)."
    )


@pytest.mark.parametrize("block", BLOCKS, ids=IDS)
def test_readme_block_runs(block, tmp_path):
    line, code = block
    script = RUNNER.format(
        tests=str(ROOT / "tests"), readme=str(README), line=line, n_lines=code.count("\n")
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ran"), (
        f"README.md:{line}: the block failed when run as written:\n{result.stderr[-4000:]}"
    )
    if "videos/" in code:
        written = [p for p in (tmp_path / "videos").rglob("*") if p.is_file()]
        assert written, f"README.md:{line}: the block names videos/ but wrote nothing there"
