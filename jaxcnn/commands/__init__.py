"""Sub-commands of the ``jaxcnn`` CLI; each module exposes ``main(argv) -> int``."""
