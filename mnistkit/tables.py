"""Torch-free name tables that the CLI offers as choices (so `mnistkit --help` never imports torch).

model.py and train.py hold the implementations; tests check that these names match them.
"""

MODEL_NAMES = ("mlp", "cnn")
OPTIMIZERS = ("adam", "sgd", "adagrad", "rmsprop")
LOSSES = ("cross-entropy", "mse")
TRAIN_DEVICES = ("auto", "cpu", "cuda")
