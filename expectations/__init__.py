"""Great Expectations suites as code.

- ``expectations.raw``: row-level suites of the raw tables; failing rows are quarantined.
- ``expectations.marts``: table-level suites of the dbt marts; a failure blocks publishing.

Every expectation carries ``meta["rule"]`` (a stable name, shown in ``quarantine.rows``) and a
human reason (``meta["reason"]`` and ``notes``). ``ml.data.quality.marts`` runs the suites; nothing here
builds a GX context or touches data at import time.
"""

from expectations.marts import marts_suites
from expectations.raw import RAW_SUITES

__all__ = ["RAW_SUITES", "marts_suites"]
