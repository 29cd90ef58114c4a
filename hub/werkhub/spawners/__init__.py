"""Spawners: thin subclasses per backend over pure builders."""
