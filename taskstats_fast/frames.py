"""The name 0.1.0 gave ``taskstats_fast.recording.columns`` (records as tables); kept so code
that imports it keeps working.  New code imports ``taskstats_fast.recording.columns``."""

from .recording.columns import *  # noqa: F401,F403
from .recording.columns import __all__  # noqa: F401
from .recording.columns import _KIND_CATEGORIES  # noqa: F401  (report.py uses it)
