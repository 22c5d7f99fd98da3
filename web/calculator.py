"""Video calculator page (issue 5): being written."""

from flask import Blueprint

bp = Blueprint("calculator", __name__)
