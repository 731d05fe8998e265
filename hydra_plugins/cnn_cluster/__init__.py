"""Hydra plugins of this project (Hydra instantiates launchers only from the ``hydra_plugins`` package)."""
