"""An experiment, not part of mitm_wsroute: mitmproxy's hook dispatch with the addon callables
of each hook looked up once and cached (the same calls, in the same order).

``python bench/instructions.py --cached-dispatch`` loads it (``-s``) into every mitmdump it
measures. It never drops its cache, so it is only correct while no addon is added, removed or
reloaded; a real version belongs in mitmproxy's `AddonManager`.
"""

import inspect
import logging

from mitmproxy import addonmanager, exceptions, hooks

_cache: dict[str, list] = {}


async def trigger_event(self: addonmanager.AddonManager, event: hooks.Hook) -> None:
    funcs = _cache.get(event.name)
    if funcs is None:
        funcs = _cache[event.name] = [f for a in self.chain for _, f in self._iter_hooks(a, event)]
    args = event.args()
    for func in funcs:
        try:
            result = func(*args)
            if result is not None and inspect.isawaitable(result):
                await result
        except exceptions.AddonHalt:
            return
        except Exception as e:
            logging.error(f"Addon error: {e}", exc_info=True)


addonmanager.AddonManager.trigger_event = trigger_event  # type: ignore[method-assign]
