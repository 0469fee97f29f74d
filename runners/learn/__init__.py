"""The training library: the base model (model.py, fetch.py), batches, the training loop
(train.py) and DP-SGD (dp_sgd.py), losses and metrics (evaluate.py, metrics.py), novelty,
reading released adapters (adapters.py) and the model card. It knows nothing of rounds."""
