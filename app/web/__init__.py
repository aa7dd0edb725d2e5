"""The Starlette app, its lifecycle, the gallery and its templates."""
