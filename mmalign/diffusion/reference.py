"""Reference-model providers of the diffusion recipe: the one implementation lives in :mod:`mmalign.reference`
(adapters off / frozen copy / none, for UNets and VLMs alike); this module keeps the names the diffusion code
imports."""

from __future__ import annotations

from mmalign.reference import ReferenceProvider, adapters_disabled, unwrap

__all__ = ["ReferenceProvider", "adapters_disabled", "unwrap"]
