"""A script that adds nothing, for `make autobahn`'s ``server-plain-script`` mode: plain mitmdump
with a script loaded, as the addon's modes have one."""

addons: list[object] = []
