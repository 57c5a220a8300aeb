"""Encoders shipped with napari-emseg (package data; this folder holds no code).

Drop-in format, read by :mod:`napari_emseg.models.registry` without any registration:

* ``<name>.safetensors`` -- a checkpoint written by
  :func:`napari_emseg.models.checkpoint.save_checkpoint`, whose header card describes it
  (``family``, ``method``, ``data``, ``steps``, ``final_loss``, ``licence``, ``command``,
  ``training``; optional ``name``, ``description``, ``voxel_size``, ``tile``);
* ``<name>.card.json`` (optional) -- card fields that complete or override the header's;
* ``<name>.download.json`` -- an encoder fetched on demand: ``name``, ``url``, ``sha256``,
  ``config`` (ModelConfig), ``card``, optional ``info`` and ``params``.
"""
