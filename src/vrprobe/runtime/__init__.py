"""Where and how work runs: devices and load options (`devices`), batch sizes and out-of-memory halving
(`batching`), the seed rule (`seeding`), progress callbacks (`progress`) and the run directory (`runs`).

Nothing here computes a metric or runs a model's analysis.
"""
