"""Maps the top-level `passes/` and `backends/` folders to `sparsecc.passes` / `sparsecc.backends`,
so nothing named `passes` or `backends` lands in site-packages."""
from setuptools import find_packages, setup

MAPPED = {"sparsecc.passes": "passes", "sparsecc.backends": "backends"}
packages = find_packages(include=["sparsecc", "sparsecc.*"])
for pkg, folder in MAPPED.items():
    packages += [pkg + sub[len(folder):] for sub in find_packages(include=[folder, folder + ".*"])]

setup(packages=packages, package_dir=MAPPED)
