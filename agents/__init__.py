"""Agents: one file per algorithm, each exposing make_train(config) -> train(key)."""
