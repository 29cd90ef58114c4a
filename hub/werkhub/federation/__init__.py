"""Federated learning across organisations with Flower: the service side (rules, store,
supervisor) and the runtime that drives Flower's executables."""
