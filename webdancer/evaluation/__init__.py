"""`webdancer eval`, one job per module: `run` (the driver and the run folder), `scores` (scoring, Pass@1 / Pass@k
and their intervals), `report` (markdown, plots, comparisons), `tool_sessions` (tool accounting)."""
