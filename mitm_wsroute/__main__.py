"""``python -m mitm_wsroute``: the `mitm-wsroute` command."""

import sys

from .cli import main

sys.exit(main())
