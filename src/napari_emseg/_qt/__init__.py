"""napari dock widgets: the only part of napari-emseg that imports Qt, magicgui or napari.qt.

Widgets are thin: they build a job's config from their controls, run the core job in a worker
thread (:mod:`._jobs`), and show what it yields and returns.
"""
