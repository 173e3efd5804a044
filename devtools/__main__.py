"""``python -m devtools``."""

from devtools.cli import app

if __name__ == "__main__":
    app()
