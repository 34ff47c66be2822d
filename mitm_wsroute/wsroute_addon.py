"""The addon as a mitmproxy script, installed with the package:
``mitmdump -s "$(mitm-wsroute --addon-path)" --set wsroute_scripts=routes.py``."""

from mitm_wsroute.addon import WsRoute

addons = [WsRoute()]
