"""Kubernetes backend: KubeSpawner with a booking's GPUs, and nothing else, in the pod.

The hub's pre-spawn step asks the werkhub service for the user's booking and calls
:meth:`WerkhubKubeSpawner.apply_gpu_assignment`; the pod then gets

* the booked count of the device plugin's resource (``nvidia.com/gpu`` or a MIG resource
  such as ``nvidia.com/mig-3g.40gb``) as limits and requests, and ``nvidia.com/gpu: 0``
  for a CPU-only server;
* a node selector pinning it to the booked node, and the GPU nodes' toleration;
* ``NVIDIA_VISIBLE_DEVICES=void`` on CPU-only servers, so no GPU leaks in where the node's
  default container runtime is NVIDIA's and the image says "all".

Kubernetes' device plugin chooses which of the node's GPUs the pod gets: the count and the
node are the booking's, the GPU indexes may differ from the booked unit ids. That keeps the
ledger exact as long as werkhub alone places GPU pods on its nodes (taint them).

The logic lives in pure functions (:func:`gpu_pod_settings` and ``werkhub.gpus.devices``);
the class only snapshots its configured traits and sets the merged values.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kubespawner import KubeSpawner
from traitlets import Dict, Unicode, default

from werkhub.gpus.devices import (
    GpuAssignment,
    KubeResourceNames,
    gpu_environment,
    kube_node_selector,
    kube_resources,
    kube_tolerations,
)
from werkhub.spawners.booking import BookingSpawnerMixin

#: the traits a GPU assignment decides; their configured values are kept as the base
GPU_TRAITS = (
    "extra_resource_limits",
    "extra_resource_guarantees",
    "node_selector",
    "tolerations",
    "environment",
)

#: who decides a pod's devices: the booking and the device plugin, never configuration
DEVICE_ENV = frozenset({"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"})

#: container security context of every user pod: non-root, no privilege escalation
SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def as_list(tolerations: Any) -> list[Any]:
    """KubeSpawner takes tolerations as a list or as a dict sorted by key."""
    if isinstance(tolerations, Mapping):
        return [tolerations[key] for key in sorted(tolerations)]
    return list(tolerations or [])


def gpu_pod_settings(
    base: Mapping[str, Any],
    assignment: GpuAssignment | None,
    *,
    resource_names: KubeResourceNames | None = None,
    node_label: str = "kubernetes.io/hostname",
    product_label: str | None = "nvidia.com/gpu.product",
    product_names: Mapping[str, str] | None = None,
    taint_key: str = "nvidia.com/gpu",
) -> dict[str, Any]:
    """The values of :data:`GPU_TRAITS` for one spawn: the configured ``base`` with the
    booking's GPUs on top. The booking wins where both name the same key, so configuration
    cannot widen what a server may use."""
    resources = kube_resources(assignment, resource_names)
    names = resource_names or KubeResourceNames()
    gpu_keys = {names.gpu, *resources["limits"]}
    mig_prefix = names.mig.split("{", 1)[0]

    def without_gpus(values: Mapping[str, Any] | None) -> dict[str, Any]:
        # GPU resources are the booking's alone: configured ones are dropped
        return {
            k: v
            for k, v in (values or {}).items()
            if k not in gpu_keys and not k.startswith(mig_prefix)
        }

    gpu_tolerations = kube_tolerations(assignment, taint_key=taint_key)
    return {
        "extra_resource_limits": {
            **without_gpus(base.get("extra_resource_limits")),
            **resources["limits"],
        },
        "extra_resource_guarantees": {
            **without_gpus(base.get("extra_resource_guarantees")),
            **resources["requests"],
        },
        "node_selector": {
            **(base.get("node_selector") or {}),
            **kube_node_selector(
                assignment,
                node_label=node_label,
                product_label=product_label,
                product_names=product_names,
            ),
        },
        "tolerations": [
            # only a booking lets a pod onto the GPU nodes
            *(t for t in as_list(base.get("tolerations")) if t.get("key") != taint_key),
            *gpu_tolerations,
        ],
        "environment": {
            **{k: v for k, v in (base.get("environment") or {}).items() if k not in DEVICE_ENV},
            **gpu_environment(assignment, backend="kubernetes"),
        },
    }


class WerkhubKubeSpawner(BookingSpawnerMixin, KubeSpawner):  # type: ignore[misc]
    """KubeSpawner that gives a server exactly its booking's GPUs (or none)."""

    gpu_resource_name = Unicode(
        "nvidia.com/gpu", help="Extended resource of whole GPUs (NVIDIA device plugin)"
    ).tag(config=True)
    gpu_mig_resource = Unicode(
        "nvidia.com/mig-{profile}",
        help="""Extended resource of a MIG slice; {profile} is e.g. 3g.40gb.

        The default fits the device plugin's "mixed" MIG strategy; set "nvidia.com/gpu"
        for its "single" strategy.""",
    ).tag(config=True)
    gpu_node_label = Unicode(
        "kubernetes.io/hostname",
        help="Node label whose value is the werkhub node name of a booking",
    ).tag(config=True)
    gpu_product_label = Unicode(
        "nvidia.com/gpu.product",
        help="Node label naming the GPU model (GPU Feature Discovery); empty: none",
    ).tag(config=True)
    gpu_product_names = Dict(
        {},
        help="""werkhub GPU type or model -> value of gpu_product_label, for example
        {"H100": "NVIDIA-H100-80GB-HBM3"}. Types without an entry are pinned by node only.""",
    ).tag(config=True)
    gpu_toleration_key = Unicode(
        "nvidia.com/gpu", help="Taint key of the GPU nodes, tolerated by GPU pods only"
    ).tag(config=True)

    gpu_assignment: GpuAssignment | None = None
    _gpu_applied = False
    _gpu_base: dict[str, Any] | None = None

    # user pods run as the images' unprivileged user (jovyan, 1000:100) whatever the image
    @default("uid")
    def _uid_default(self) -> int:
        return 1000

    @default("gid")
    def _gid_default(self) -> int:
        return 100

    @default("fs_gid")
    def _fs_gid_default(self) -> int:
        return 100

    @default("container_security_context")
    def _csc_default(self) -> dict[str, Any]:
        return copy.deepcopy(SECURITY_CONTEXT)

    def apply_gpu_assignment(self, assignment: GpuAssignment | None) -> None:
        """Set this spawn's GPU traits from ``assignment`` (None: CPU only); idempotent."""
        if self._gpu_base is None:
            self._gpu_base = {name: copy.deepcopy(getattr(self, name)) for name in GPU_TRAITS}
        settings = gpu_pod_settings(
            self._gpu_base,
            assignment,
            resource_names=KubeResourceNames(gpu=self.gpu_resource_name, mig=self.gpu_mig_resource),
            node_label=self.gpu_node_label,
            product_label=self.gpu_product_label or None,
            product_names=self.gpu_product_names,
            taint_key=self.gpu_toleration_key,
        )
        for name, value in settings.items():
            setattr(self, name, value)
        self.gpu_assignment = assignment
        self._gpu_applied = True

    async def get_pod_manifest(self) -> Any:
        if not self._gpu_applied:
            # nobody decided the GPUs of this spawn: give it none
            self.apply_gpu_assignment(None)
        return await super().get_pod_manifest()

    def clear_state(self) -> None:
        super().clear_state()
        self.gpu_assignment = None
        self._gpu_applied = False
