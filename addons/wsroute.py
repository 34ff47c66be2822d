"""mitmproxy entry point: ``mitmdump -s addons/wsroute.py --set wsroute_scripts=routes.py``."""

import sys
from pathlib import Path

# Run from a checkout too, without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mitm_wsroute.addon import WsRoute

addons = [WsRoute()]
