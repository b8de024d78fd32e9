"""Real data sets that install offline from the package registry (see docs/data.md).

Each loader finds its files inside an installed package; nothing is downloaded.
"""
