"""``python -m rlviz.cli``: the ``rlviz`` command."""

import sys

from rlviz.cli import main

sys.exit(main())
