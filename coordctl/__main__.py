"""``python -m coordctl``: the same as the ``coordctl`` console script."""

import sys

from coordctl.cli import main

sys.exit(main())
