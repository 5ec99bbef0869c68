"""Adapters between :class:`~wskan_ext.KANWeights` and other libraries' formats.

Installed as ``wskan_ext.adapters`` (the folder is ``adapters/`` in the repository).
Each submodule is imported on demand so that optional dependencies (pykan, nfn) are
only needed by the adapter that uses them.
"""
