"""Pipeline stages: each module is one DVC stage, runnable as `python -m stages.<name>`."""

import sys

if sys.argv[:1] == ["-m"]:  # `python -m <this package>.<module>` is starting: no traceback for a Ctrl-C while it imports
    from classifier.runtime.errors import guard_start
    guard_start()
