"""The project as a user gets it: every README command works in the environment the README's study
command builds, and the Snakemake internals we rely on are still there."""

from __future__ import annotations

import re
from importlib.metadata import requires

from snakemake_helpers import REPO

README = (REPO / "README.md").read_text()


def _closure(package: str, seen: set[str] | None = None) -> set[str]:
    """Every distribution ``package`` installs without extras (names lower-cased, '-' for '_')."""
    from importlib.metadata import PackageNotFoundError

    seen = set() if seen is None else seen
    name = package.lower().replace("_", "-")
    if name in seen:
        return seen
    seen.add(name)
    try:
        reqs = requires(package) or []
    except PackageNotFoundError:
        return seen
    for req in reqs:
        if "extra ==" in req or "extra==" in req:
            continue
        dep = re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0]
        _closure(dep, seen)
    return seen


def test_the_report_command_works_without_the_test_extra() -> None:
    """`snakemake --report` needs pygments: it must come with the study's own install, not only through
    pytest (which pulls it in the test environment and would hide its absence)."""
    assert "snakemake --report report.html" in README
    installed = _closure("ae-batch")
    for needed in ("pygments", "jinja2", "snakemake", "docutils"):
        assert needed in installed, needed
    assert "pytest" not in installed  # the closure really excludes the test extra


def test_every_ae_batch_subcommand_in_the_readme_exists() -> None:
    from ae_batch.cli import build_parser

    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001 - argparse has no public accessor
    code = "\n".join(re.findall(r"```.*?```", README, re.S) + re.findall(r"`[^`\n]+`", README))
    used = set(re.findall(r"\bae-batch ([a-z][a-z-]+)", code))
    assert used and used <= commands, used - commands


def test_snakemake_internals_we_rely_on_are_still_there() -> None:
    """Snakemake has no documented accessor for "do jobs run on this machine" (ae_batch.workflow_support
    reads ``workflow.local_exec``) and documents ``workflow.cores`` only in its CLI help. Fail loudly if
    either changes."""
    import snakemake.api  # noqa: F401 - imports snakemake.workflow in its supported order
    from snakemake.workflow import Workflow

    assert isinstance(Workflow.local_exec, property)
    assert isinstance(Workflow.cores, property)


def test_the_readme_figures_are_the_benchmark_files() -> None:
    """Every figure block of the README is what `benchmarks/readme_tables.py` renders from
    `benchmarks/results/`: none is typed or edited by hand, none is stale."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_tables", REPO / "benchmarks/readme_tables.py")
    assert spec is not None and spec.loader is not None
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    assert README.count("<!-- bench:") == len(tables.BLOCKS) >= 6
    assert tables.updated_readme(README) == README, "run `python benchmarks/readme_tables.py --write`"
