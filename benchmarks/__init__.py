"""Benchmarks (``make bench``): each ``bench_*.py`` measures one speed goal side by side with the
LangChain alternative, the simulator in its own process. Helpers shared by them (and by the Redis
acceptance test) live here too, outside the library."""
