"""Processes written as YAML: the language (model), expressions, catalog, validator, interpreter."""
