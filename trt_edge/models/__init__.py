"""Small architectures written here (torchvision is not a dependency) and
loaders for the real weights that ship in registry packages. Importing a
submodule imports torch."""
