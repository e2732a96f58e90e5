"""The zoo: tiny models of the three real architectures, trained on easy-VQA by `vrprobe zoo train NAME`.

`build.py` holds the configs, the offline word-level tokenizer and the real processors; `train.py` the recipe; the
trained checkpoints live in `checkpoints/NAME/` and load through `vrprobe.models.load_adapter("zoo:NAME")`.
"""
