"""modelserve: serve Keras models behind a web page and a JSON API, delivered by git push."""

__version__ = "0.1.0"
