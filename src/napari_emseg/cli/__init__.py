"""Command-line front ends: ``napari-emseg`` (subcommands) and ``napari-emseg-pretrain``.

Each subcommand lives in a module ``cmd_<name>.py`` here that defines ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; :mod:`.main` finds them automatically.
"""
