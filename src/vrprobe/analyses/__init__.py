"""Analyses: one module per analysis over a loaded model and a dataset.

- `band`: band corruption and the band sweep; `knockout`: attention knockout windows and integration layers;
  `controls`: the study's controls; `probe`: hidden-state reliability probes; `proxies`: the `probe` and `attribute`
  runs; `reliability`: the study's reliability signals; `study`: the study over models × datasets.

An analysis parses no CLI option and writes no HTML.
"""
