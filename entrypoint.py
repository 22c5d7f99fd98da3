#!/usr/bin/env python3
"""The container's entrypoint: JupyterLab and the downloader at once, ComfyUI the moment its models are verified.

What it does is `downloader.pod.entrypoint`; this file only reads the settings and runs it.
"""

from __future__ import annotations

import sys

from downloader.pod.entrypoint import main

if __name__ == "__main__":
    sys.exit(main())
