"""Benchmarks (``make bench``): each ``bench_*.py`` measures one speed goal side by side with the
LangChain alternative, the simulator in its own process. Helpers shared by them (and by the Redis
acceptance test) live here too, outside the library."""

import os as _os
import tempfile as _tempfile

# A benchmark's pools remember learned limits in a cache dir of this run's own: nothing learned
# by an earlier run (a simulator on a reused port) makes a cold figure warm, and nothing a run
# learns is left in the user's cache. Pools that must start cold within a run say remember: false.
_os.environ["XDG_CACHE_HOME"] = _tempfile.mkdtemp(prefix="rat-bench-cache-")
