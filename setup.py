"""Package list for setuptools (everything else is in pyproject.toml).

The repository keeps the product's folders envs/ and agents/ at the top, but they install as
``rlviz.envs`` and ``rlviz.agents``: a user's own ``envs`` / ``agents`` packages (common in RL
code) then never shadow ours nor get overwritten in site-packages.
"""

from setuptools import find_packages, setup

APP_FOLDERS = {"rlviz.envs": "envs", "rlviz.agents": "agents"}

packages = find_packages(include=["rlviz", "rlviz.*"])
for name, folder in APP_FOLDERS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]

setup(packages=packages, package_dir=APP_FOLDERS)
