"""Which kind of rows a recorded file holds, told from its metadata (``schema_of_metadata``) or,
for a file in progress whose format keeps no metadata until it closes, from its column names
(``metadata_of_names``): ``DTYPE`` records (exits and snapshots), interval rows by task or by
process (``interval_rows``), PSI rows (``psi_rows``).  The readers and recovery ask here, so a
new row kind is one more entry in these two functions.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

from .. import schema as _columns
from ..schema import TableSchema
from .interval_rows import BY, INTERVAL_ROWS, interval_schema
from .psi_rows import PSI_ROWS, psi_schema

__all__ = ["schema_of_metadata", "metadata_of_names", "rows_name"]


def schema_of_metadata(metadata: Mapping[str, Any]) -> TableSchema:
    """The schema of the rows a file with this metadata holds (``DTYPE`` records unless its
    ``rows`` says otherwise)."""
    rows = metadata.get("rows")
    if rows == INTERVAL_ROWS:
        return interval_schema(str(metadata.get("by", "task")))
    if rows == PSI_ROWS:
        return psi_schema()
    return _columns.DEFAULT


def metadata_of_names(names: Sequence[str], table_names: Callable[[TableSchema], Tuple[str, ...]]
                      ) -> Dict[str, Any]:
    """The metadata keys saying what rows these column (or field) names are: {} for records.
    ``table_names(schema)``: the column names the schema's files hold."""
    wanted = set(names)
    if "interval_start" not in wanted:
        return {}
    for schema in (psi_schema(), *(interval_schema(by) for by in BY)):
        if wanted == set(schema.dtype.names or ()) or wanted == set(table_names(schema)):
            return dict(schema.metadata)
    return dict(interval_schema("task").metadata)


def rows_name(schema: TableSchema) -> str:
    """What a schema's rows are called in an error message."""
    meta = getattr(schema, "metadata", {})
    if meta.get("rows") == PSI_ROWS:
        return "PSI rows"
    return f"interval rows by {meta['by']}" if "by" in meta else "taskstats records"
