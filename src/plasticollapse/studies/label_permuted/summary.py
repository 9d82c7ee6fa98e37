"""summary.json and the sweep's table: the streams' shared ones."""

from plasticollapse.studies.streams.summary import summarise_run, summarise_study

__all__ = ["summarise_run", "summarise_study"]
