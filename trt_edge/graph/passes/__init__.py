"""Built-in graph passes. Importing a module here registers its passes."""
