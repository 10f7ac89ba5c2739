"""``python -m rlviz``: the ``rlviz`` command."""

import sys

from rlviz.cli import main

sys.exit(main())
