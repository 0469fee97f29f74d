"""What a route keeps between rounds: its store and log (store.py), its signed registry
(registry.py), training checkpoints and the route lock. Nothing here imports torch, so a
deploying CronJob's ``route resolve`` stays light."""
