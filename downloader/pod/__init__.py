"""Pod supervision for the container's entrypoint: child processes, the ComfyUI placeholder page, the workspace."""
