"""Torch-free name tables that the CLI offers as choices (so `mnistkit --help` never imports torch).

model.py and train.py hold the implementations; tests check that these names match them.
"""

MODEL_NAMES = ("mlp", "cnn")
OPTIMIZERS = ("adam", "sgd", "adagrad", "rmsprop")
LOSSES = ("cross-entropy", "mse")
TRAIN_DEVICES = ("auto", "cpu", "cuda")
# The training defaults (the PyTorch tutorial's): train.TrainConfig's field defaults and the CLI's read them.
TRAIN_DEFAULTS = {"dataset": "mnist", "model": "mlp", "optimizer": "adam", "momentum": 0.0, "loss": "cross-entropy",
                  "epochs": 10, "batch_size": 64, "lr": 1e-3, "seed": 0, "device": "auto"}
