"""File manager for the workspace (issue 4): being written."""

from flask import Blueprint

bp = Blueprint("files", __name__)
