"""GPUs: the inventory (configured, simulated or discovered through NVML), utilisation
sampling for the idle rules, and the pure device builders the spawners and job backends
use (environment, Docker device requests, Kubernetes resources).

Owns: what GPUs exist and how a booked unit becomes a device. May import
``werkhub.config`` and ``werkhub.booking`` pure rules only.
"""
