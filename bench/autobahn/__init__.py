"""`make autobahn`: Autobahn|Testsuite through mitmdump (a package only so that mypy tells
this run.py from bench/run.py)."""
