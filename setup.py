"""Build hook: the example sites ship in the wheel as package data ``ems/examples``.

Everything else is declared in pyproject.toml. The example site files stay in ``configs/`` in the
repository (the README's and the tests' paths); the wheel carries them, with their tariffs, data
and the data's licence notes, at ``ems/examples/`` (not the data scripts), where
:func:`ems.paths.example_configs` finds them after ``pip install``, so ``ems demo`` runs from an
installed wheel. pyproject.toml cannot map a directory outside the packages it finds into one of
them; this build step adds that one mapping.
"""

from setuptools import setup
from setuptools.command.build_py import build_py

#: the data-only packages built from configs/ and the files each carries (configs/data/*.py, which
#: regenerate the data and need the extra 'data', stay out)
EXAMPLES = {"ems.examples": ["*.yaml"], "ems.examples.tariffs": ["*.yaml"], "ems.examples.data": ["*.csv", "README.md"]}


class BuildPyWithExamples(build_py):
    """``build_py`` that also builds ``configs/`` as the data-only package ``ems.examples``."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.packages = [*(self.packages or []), *EXAMPLES]
        self.package_dir["ems.examples"] = "configs"   # its subpackages follow: configs/tariffs, configs/data
        self.package_data.update(EXAMPLES)

    def check_package(self, package: str, package_dir: str) -> str | None:
        # data only: no __init__.py to look for (and no warning that there is none)
        return None if package in EXAMPLES else super().check_package(package, package_dir)

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        return [] if package in EXAMPLES else super().find_package_modules(package, package_dir)


setup(cmdclass={"build_py": BuildPyWithExamples})
