"""The video calculator: valid WAN frame counts and sizes, latent shapes, files needed, VRAM and time estimates.

Pure functions over the tables in `models`; the web page (`web.calculator`) adds Flask and the files on disk.
"""
