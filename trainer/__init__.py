"""Training: datasets, the train loop, evaluation, promotion and the one training pipeline
(`python -m trainer` and the worker's training task both run it).

May import the core and the model runtime; never worker, api or cli.
"""
