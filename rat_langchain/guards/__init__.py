"""Guards: what stands between a call and the endpoint.

``build_guards(config)`` makes them; ``Guards.guard(key)`` gives the per-call policy of one
(endpoint, model): a deadline over the whole call, retries (``retry``), and per attempt the
breaker's permit (``breaker``), the limiter's reservation (``limiter``) and the concurrency bound.
Header parsing (``headers``) and the judgement of failures (``classify``) are shared by all of
them; ``redis`` shares the limiter and breaker openings across processes.

Guards know the config and metrics, nothing of models, indexes or plans.
"""

from rat_langchain.guards.build import Guards, build_guards
from rat_langchain.guards.engine import Guard, GuardStats
from rat_langchain.guards.key import Key

__all__ = ["Guard", "GuardStats", "Guards", "Key", "build_guards"]
