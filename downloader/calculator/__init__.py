"""The video calculator: valid WAN frame counts and sizes, latent shapes, files needed, VRAM and time estimates.

Pure functions over the tables in `models`: `inputs` parses a query, `shapes` holds WAN's rules for lengths and
sizes, `estimates` the VRAM and time estimates, `model_files` the files each model needs (from the catalog the
caller passes), `result` puts them together. The web page (`web.calculator`) adds Flask and the files on disk.
"""
