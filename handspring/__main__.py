"""``python -m handspring ...``: the ``handspring`` command, from a checkout too."""

import sys

from .cli import main

sys.exit(main())
